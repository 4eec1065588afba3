"""The client waits out a server that went away: bounded by time (``max_outage``), not by a count
of attempts, saying so while it waits and when the server is back.

Fast tests talk to a port nobody listens on (connection refused) or go through the fault proxy
of ``test_client_faults``; the slow one stops a real ``sorakit serve`` for a minute in the middle
of a ``sorakit batch`` and a ``sorakit generate``, and starts it again on the same port and data dir.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sorakit.cli.main import app
from sorakit.client import AsyncSoraClient, RetryPolicy, SoraClient, errors

try:
    from serverproc import ServerProcess, free_port
    from test_batch import check_videos, journal_rows, server_tasks
    from test_client_faults import proxy, server, user  # noqa: F401  (fixtures: a real server, a fault proxy)
except ImportError:  # tests/ made a package
    from tests.serverproc import ServerProcess, free_port
    from tests.test_batch import check_videos, journal_rows, server_tasks
    from tests.test_client_faults import proxy, server, user  # noqa: F401

NO_SLEEP = RetryPolicy(wait=False, max_outage=60)
OLD_ATTEMPTS = 5  # what the client used to stop at, whatever the time


def nowhere() -> str:
    """A loopback URL where nothing listens: every connection is refused at once."""
    return f"http://127.0.0.1:{free_port()}"


def failing_calls(tmp_path: Path):
    return {"get": lambda c: c.pending(),
            "create": lambda c: c.create("a kite in the dark", n_frames=15),
            "download": lambda c: c.download({"id": "gen_x", "url": c.base_url + "/assets/gen_x/video.mp4"},
                                             tmp_path / "v.mp4")}


# -- giving up: after max_outage, not after a count -----------------------------------------------
@pytest.mark.parametrize("call", ["get", "create", "download"])
def test_the_client_gives_up_after_max_outage_not_after_a_few_attempts(call, tmp_path):
    events = []
    with SoraClient(nowhere(), "token", retry=NO_SLEEP, on_outage=events.append) as client:
        with pytest.raises(errors.ConnectError) as info:
            failing_calls(tmp_path)[call](client)
    exc, attempts = info.value, len(events) + 1  # one report per failed attempt but the last
    assert exc.outage == pytest.approx(60)
    assert "could not connect" in str(exc) and "the server was unreachable for 60 s" in str(exc)
    assert attempts > OLD_ATTEMPTS and f"({attempts} attempts)" in str(exc)
    assert [(e.state, e.attempt) for e in events] == [("waiting", n) for n in range(1, attempts)]
    assert all(a.remaining > b.remaining for a, b in zip(events, events[1:]))
    assert events[0].message == "server unreachable, retrying for up to 1m00s (attempt 1)..."


def test_the_limit_is_time_as_the_clock_measures_it():
    started = time.monotonic()
    with SoraClient(nowhere(), "token", retry=RetryPolicy(max_outage=1.0, base=0.05, cap=0.2)) as client:
        with pytest.raises(errors.ConnectError) as info:
            client.usage()
    took = time.monotonic() - started
    assert 1.0 <= took < 2.5, took
    assert client.requests_sent > OLD_ATTEMPTS and info.value.outage >= 1.0


def test_the_async_client_waits_the_same_way():
    async def main():
        async with AsyncSoraClient(nowhere(), "token", retry=NO_SLEEP) as client:
            with pytest.raises(errors.ConnectError) as info:
                await client.pending()
            return client.requests_sent, info.value

    sent, exc = asyncio.run(main())
    assert sent > OLD_ATTEMPTS and "the server was unreachable for 60 s" in str(exc)


def test_max_outage_0_fails_at_once():
    with SoraClient(nowhere(), "token", retry=RetryPolicy(max_outage=0)) as client:
        with pytest.raises(errors.ConnectError) as info:
            client.pending()
    assert client.requests_sent == 1 and info.value.outage < 0.1
    assert "not retried (the maximum outage is 0 s)" in str(info.value)


# -- reporting: each attempt, then the server's return ---------------------------------------------------
def test_each_failed_attempt_is_reported_and_so_is_the_return(proxy, user):  # noqa: F811
    proxy.add(r"^/backend/nf/check", refuse=True, times=2)
    proxy.add(r"^/backend/nf/check", respond=(502, {}, b"<html>Bad Gateway</html>"), times=1)
    events = []
    with SoraClient(proxy.url, user[1], retry=RetryPolicy(base=0.01, cap=0.05),
                    on_outage=events.append) as client:
        assert "rate_limit_and_credit_balance" in client.usage()
    assert [(e.state, e.attempt) for e in events] == [("waiting", 1), ("waiting", 2), ("waiting", 3), ("back", 0)]
    assert events[0].message.startswith("server unreachable, retrying for up to 5m00s (attempt 1)")
    assert events[2].message.startswith("server failing (HTTP 502), retrying for up to ")
    assert events[3].message.startswith("server is back after ")


# -- the commands: --max-outage, SORAKIT_MAX_OUTAGE, client.toml ------------------------------------------
@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.setenv("SORAKIT_CONFIG_DIR", str(tmp_path / "cfg"))

    def run(*args: str):
        started = time.monotonic()
        result = CliRunner().invoke(app, list(args))
        return result, time.monotonic() - started

    return run


def test_max_outage_0_on_the_command_line_fails_at_once(cli):
    r, took = cli("generate", "a kite", "--server", nowhere(), "--token", "t", "--max-outage", "0")
    assert r.exit_code == 8, r.output
    assert "could not connect" in r.stderr and "not retried" in r.stderr and "retrying" not in r.stderr
    assert took < 5


def test_a_short_max_outage_is_waited_out_then_named(cli):
    r, took = cli("download", "task_x", "--server", nowhere(), "--token", "t", "--max-outage", "1.5")
    assert r.exit_code == 8, r.output
    assert re.search(r"^server unreachable, retrying for up to [12]s \(attempt 1\)\.\.\.$", r.stderr, re.M)
    assert re.search(r"could not connect: .*; the server was unreachable for 1\.[5-9] s \(\d+ attempts\)",
                     r.stderr), r.stderr
    assert 1.5 <= took < 5


def test_the_environment_and_client_toml_set_it_and_the_flag_wins(cli, tmp_path, monkeypatch):
    url = nowhere()
    monkeypatch.setenv("SORAKIT_MAX_OUTAGE", "0")
    r, took = cli("usage", "--server", url, "--token", "t")
    assert r.exit_code == 8 and "not retried" in r.stderr and took < 5
    r, _ = cli("usage", "--server", url, "--token", "t", "--max-outage", "0.3")
    assert r.exit_code == 8 and "the server was unreachable for 0.3 s" in r.stderr, r.stderr
    monkeypatch.delenv("SORAKIT_MAX_OUTAGE")
    cli("login", "--server", url, "--token", "t")
    config = tmp_path / "cfg" / "client.toml"
    config.write_text(config.read_text() + "max_outage = 0\n")
    r, took = cli("status")
    assert r.exit_code == 8 and "not retried" in r.stderr and took < 5
    cli("login", "--server", url, "--token", "t2")  # a new login keeps the preference
    assert "max_outage = 0.0" in config.read_text() and 't2"' in config.read_text()


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_setting_is_a_usage_error(cli, monkeypatch, value):
    monkeypatch.setenv("SORAKIT_MAX_OUTAGE", value)
    r, _ = cli("usage", "--server", nowhere(), "--token", "t")
    assert r.exit_code == 2 and "SORAKIT_MAX_OUTAGE" in r.stderr


# -- a server restart in the middle of a batch ----------------------------------------------------------
DOWN = 60.0
PROMPTS = [f"a paper lantern number {i}" for i in range(4)]
SINGLE = "one more lantern"


@pytest.mark.slow
def test_a_batch_and_a_generate_wait_out_a_one_minute_server_restart(tmp_path):
    """The batch runs one row at a time (1.5 s each), so the server stops with rows still to make;
    the generate starts after the first row is done and the server stops as soon as its task exists."""
    data, work = tmp_path / "server", tmp_path / "work"
    work.mkdir()
    (work / "prompts.txt").write_text("".join(p + "\n" for p in PROMPTS))
    env, args = {"SORAKIT_WORKERS": "2", "SORAKIT_DEFAULT_CONCURRENCY": "5"}, ["--preview-pace", "1.5"]
    first = ServerProcess(data, env=env, args=args).start()
    restarted = ServerProcess(data, port=first.port, env=env, args=args)
    journal = work / "out" / ".sorakit-batch-prompts.sqlite"
    common = ["--server", first.url, "--token", first.token, "--frames", "15"]
    procs = []
    try:
        batch = _sorakit(procs, tmp_path, ["batch", "prompts.txt", "--out-dir", "out", "--max-in-flight", "1",
                                           "--poll-interval", "0.5", "--json", *common])
        _until(lambda: "done" in _states(journal), "the first row is done")
        generate = _sorakit(procs, tmp_path, ["generate", SINGLE, "-o", "single.mp4", "--json", *common])
        _until(lambda: SINGLE in [t["prompt"] for t in server_tasks(data / "sorakit.db")], "the generate submits")
        assert "pending" in _states(journal), "the batch was nearly over before the outage"
        first.stop()
        time.sleep(DOWN)
        assert batch.poll() is None and generate.poll() is None, "a client gave up during the outage"
        restarted.start()
        out, err = batch.communicate(timeout=60)
        gen_out, gen_err = generate.communicate(timeout=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        first.kill()
        restarted.kill()

    assert batch.returncode == 0, f"{out}\n{err}"
    assert generate.returncode == 0, f"{gen_out}\n{gen_err}"
    for said in (err, gen_err):
        assert re.search(r"server unreachable, retrying for up to 4m\d\ds \(attempt \d+\)\.\.\.", said), said
        back = re.search(r"^server is back after (?:(\d+)m)?(\d+)s$", said, re.M)
        assert back and int(back[1] or 0) * 60 + int(back[2]) >= DOWN - 10, said  # noticed a poll late
    summary = json.loads(out)
    assert (summary["done"], summary["failed"], summary["pending"]) == (4, 0, 0)
    sidecars = check_videos(work / "out", 4, 15)
    made = json.loads(gen_out)
    assert (work / made["path"]).is_file() and (work / made["sidecar"]).is_file()
    # exactly one task per row, and one for the generate: nothing was submitted twice
    tasks = server_tasks(data / "sorakit.db")
    assert sorted(t["prompt"] for t in tasks) == sorted([*PROMPTS, SINGLE])
    assert all(t["status"] == "succeeded" for t in tasks)
    by_prompt = {t["prompt"]: t["id"] for t in tasks}
    assert {r["prompt"]: r["task_id"] for r in journal_rows(journal)} == {p: by_prompt[p] for p in PROMPTS}
    assert {s["task_id"] for s in sidecars} == {by_prompt[p] for p in PROMPTS}
    assert made["task_id"] == by_prompt[SINGLE]


def _sorakit(procs: list, tmp_path: Path, args: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SORAKIT_")}
    env["SORAKIT_CONFIG_DIR"] = str(tmp_path / "cfg")
    proc = subprocess.Popen([sys.executable, "-m", "sorakit", *args], cwd=tmp_path / "work", env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs.append(proc)
    return proc


def _until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not _holds(condition):
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def _holds(condition) -> bool:
    try:
        return condition()
    except sqlite3.Error:  # a database not created yet
        return False


def _states(journal: Path) -> list[str]:
    return [r["state"] for r in journal_rows(journal)]
