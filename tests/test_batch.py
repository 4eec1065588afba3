"""``sorakit batch``: input parsing, the journal, and whole batches against the real server, in
process (``make_api``), embedded (the CLI's default) and as a separate ``sorakit serve`` process
that the batch command survives being SIGKILLed against.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sorakit.batch import Journal, JournalError, RowError, load_rows, parse_rows, run_batch
from sorakit.batch.rows import make_row
from sorakit.cli.main import app
from sorakit.client import SoraClient
from sorakit.client.core import Core
from sorakit.media.encode import probe

try:
    from serverproc import ServerProcess
except ImportError:  # tests/ made a package
    from tests.serverproc import ServerProcess

TERMINAL = ("succeeded", "failed", "cancelled")


# -- helpers ------------------------------------------------------------------------------------
def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def client_for(api, **kw) -> SoraClient:
    token = api.alice["Authorization"].split()[1]
    return SoraClient("http://testserver", token, http_client=api.client, poll_interval=(0.05, 0.1), **kw)


def server_tasks(db) -> list[dict]:
    """The server's tasks: read from its SQLite file, or through an in-process Api's own store
    (whichever database it runs on)."""
    if hasattr(db, "services"):
        from sqlalchemy import select

        from sorakit.store.schema import tasks

        t = tasks.c
        with db.services.store.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(t.id, t.prompt, t.status, t.created_at,
                                                                  t.finished_at))]
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT id, prompt, status, created_at, finished_at FROM tasks")]
    finally:
        conn.close()


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = now = 0
    for _, step in points:
        now += step
        peak = max(peak, now)
    return peak


def journal_peak_unfinished(events: list[dict]) -> int:
    """Most rows the journal ever showed as submitted with a task not known to be finished."""
    open_rows: set[tuple[int, str]] = set()
    peak = 0
    for ev in events:
        key = (ev["idx"], ev["hash"])
        if ev["state"] == "submitted" and ev["task_status"] not in TERMINAL:
            open_rows.add(key)
        else:
            open_rows.discard(key)
        peak = max(peak, len(open_rows))
    return peak


def journal_rows(path: Path) -> list[dict]:
    conn = sqlite3.connect(path, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM rows ORDER BY idx")]
    finally:
        conn.close()


def journal_events(path: Path) -> list[dict]:
    conn = sqlite3.connect(path, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM events ORDER BY id")]
    finally:
        conn.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_videos(out_dir: Path, expected: int, n_frames: int) -> list[dict]:
    videos = sorted(out_dir.glob("*.mp4"))
    assert len(videos) == expected, [v.name for v in videos]
    assert not list(out_dir.glob("*.part")), "partial downloads left behind"
    sidecars = []
    for video in videos:
        assert probe(video).n_frames == n_frames
        sidecar = json.loads(Path(str(video) + ".json").read_text())
        assert sidecar["sha256"] == sha256(video)
        sidecars.append(sidecar)
    return sidecars


# -- parsing ------------------------------------------------------------------------------------
def test_text_rows_skip_blank_lines_and_comments(tmp_path):
    rows = load_rows(write(tmp_path / "p.txt", "# my prompts\n\na red kite\n  \n  # indented comment\n"
                                               "  a blue boat  \n"))
    assert [(r.index, r.line, r.prompt, r.fields, r.output) for r in rows] == [
        (1, 3, "a red kite", {}, None), (2, 6, "a blue boat", {}, None)]


def test_csv_rows_carry_parameters(tmp_path):
    text = ("prompt,orientation,seconds,size,model,style_id,seed,output\n"
            "a red kite,Landscape,5,large,sy_ore,anime,7,kite_{index}.mp4\n"
            "\"a boat, at dusk\",,,,,,,\n"
            "# a comment row\n")
    rows = load_rows(write(tmp_path / "p.csv", text))
    assert rows[0].fields == {"orientation": "landscape", "n_frames": 150, "size": "large",
                              "model": "sy_ore", "style_id": "anime", "seed": 7}
    assert rows[0].output == "kite_{index}.mp4"
    assert (rows[1].prompt, rows[1].fields, rows[1].line) == ("a boat, at dusk", {}, 3)


def test_csv_errors_name_the_problem(tmp_path):
    with pytest.raises(RowError, match="header must name a 'prompt' column"):
        load_rows(write(tmp_path / "a.csv", "text,size\nx,small\n"))
    with pytest.raises(RowError, match=r"line 2 \(row 1\): unknown field\(s\) promt"):
        load_rows(write(tmp_path / "b.csv", "prompt,promt\nx,y\n"))
    with pytest.raises(RowError, match=r"line 3 \(row 2\): a non-empty 'prompt' is required"):
        load_rows(write(tmp_path / "c.csv", "prompt,size\nx,small\n,large\n"))


def test_jsonl_rows_and_a_bad_line_named(tmp_path):
    rows = load_rows(write(tmp_path / "p.jsonl", '{"prompt": "a kite", "n_frames": 60}\n\n'
                                                 '{"prompt": "a boat", "seconds": 2.5, "seed": 3}\n'))
    assert [r.fields for r in rows] == [{"n_frames": 60}, {"n_frames": 75, "seed": 3}]
    with pytest.raises(RowError, match=r"p2.jsonl, line 3: not valid JSON"):
        load_rows(write(tmp_path / "p2.jsonl", '{"prompt": "a"}\n\n{"prompt": "b",}\n'))
    with pytest.raises(RowError, match=r"line 1: expected a JSON object"):
        load_rows(write(tmp_path / "p3.jsonl", '["a kite"]\n'))


def test_bad_values_name_the_row(tmp_path):
    with pytest.raises(RowError, match=r"line 2 \(row 2\): unknown orientation 'diagonal'"):
        load_rows(write(tmp_path / "o.jsonl", '{"prompt": "a"}\n{"prompt": "b", "orientation": "diagonal"}\n'))
    with pytest.raises(RowError, match=r"row 1\): n_frames 100 and seconds 5 disagree"):
        parse_rows('{"prompt": "a", "n_frames": 100, "seconds": 5}', "jsonl")
    with pytest.raises(RowError, match=r"row 1\): seed must be a number"):
        parse_rows('{"prompt": "a", "seed": "x"}', "jsonl")
    with pytest.raises(RowError, match="no prompts found"):
        parse_rows("# nothing\n\n", "text")


def test_the_content_hash_follows_content_not_position():
    a, b = make_row(1, 1, {"prompt": "kite"}), make_row(5, 9, {"prompt": "kite"})
    assert a.content_hash == b.content_hash
    assert a.content_hash != make_row(1, 1, {"prompt": "kite", "size": "large"}).content_hash


# -- the journal --------------------------------------------------------------------------------
def test_journal_matches_rows_by_index_and_hash(tmp_path):
    path = tmp_path / "j.sqlite"
    with Journal(path) as jr:
        assert jr.sync(parse_rows("kite\nboat\ntree\n")) == []
        jr.update(jr.entries[0], state="done", sha256="x")
        jr.update(jr.entries[1], state="submitted", task_id="task_b")
    with Journal(path) as jr:
        # a line inserted on top: kite and boat moved; tree changed into "lake"
        warnings = jr.sync(parse_rows("new\nkite\nboat\nlake\n"))
        states = [(e.idx, e.prompt, e.state, e.task_id) for e in jr.entries]
        assert states == [(1, "new", "pending", None), (2, "kite", "done", None),
                          (3, "boat", "submitted", "task_b"), (4, "lake", "pending", None)]
        text = "\n".join(warnings)
        assert "row 2 (line 2) was row 1" in text and "row 3 (line 3) was row 2" in text
        assert "1 journal row(s) no longer match" in text  # "tree"


def test_a_journal_is_used_by_one_batch_at_a_time(tmp_path):
    with Journal(tmp_path / "j.sqlite"), pytest.raises(JournalError, match="another sorakit batch"):
        Journal(tmp_path / "j.sqlite")
    Journal(tmp_path / "j.sqlite").close()  # free again once closed


def test_the_stored_body_is_sent_byte_for_byte_again():
    """A resend must carry the very body of the first attempt, or sorakit refuses the key (409)."""
    body = Core.create_body("kite", orientation="landscape", n_frames=60, seed=4)
    again = dict(body)
    assert Core.create_body(again.pop("prompt"), **again) == body


# -- whole batches in process -------------------------------------------------------------------
def test_batch_learns_the_cap_and_never_fails_a_row_for_it(make_api, tmp_path):
    api = make_api(workers=2, default_concurrency=2, preview_pace=0.3)
    rows = parse_rows("".join(f"a kite number {i}\n" for i in range(6)))
    events = []
    with client_for(api) as client:
        result = run_batch(client, rows, tmp_path / "j.sqlite", tmp_path / "out", "{index}_{prompt_slug}",
                           defaults={"n_frames": 15}, poll_interval=0.05, on_event=events.append)
    assert (result.done, result.failed, result.exit_code) == (6, 0, 0)
    assert result.learned_cap == 2 and result.busy_refusals >= 1
    assert result.max_in_flight_seen <= 2
    assert any(e.kind == "cap" and "at most 2" in e.message for e in events)
    with Journal(tmp_path / "j.sqlite") as jr:
        assert journal_peak_unfinished(jr.events()) <= 2
        assert not any("429" in (e.reason or "") for e in jr.recorded())
    tasks = server_tasks(api)
    assert len(tasks) == 6 and peak_overlap([(t["created_at"], t["finished_at"]) for t in tasks]) <= 2
    sidecars = check_videos(tmp_path / "out", 6, 15)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mp4"))[0] == "001_a-kite-number-0.mp4"
    assert {s["batch"]["row"] for s in sidecars} == set(range(1, 7))


def test_max_in_flight_is_an_upper_bound(make_api, tmp_path):
    api = make_api(workers=2, default_concurrency=3)
    rows = parse_rows('{"prompt": "kite", "n_frames": 10}\n{"prompt": "boat", "seconds": 0.5}\n'
                      '{"prompt": "tree", "orientation": "landscape", "n_frames": 10}\n', "jsonl")
    with client_for(api) as client:
        result = run_batch(client, rows, tmp_path / "j.sqlite", tmp_path / "out", max_in_flight=1,
                           poll_interval=0.05)
    assert (result.done, result.max_in_flight_seen, result.busy_refusals) == (3, 1, 0)
    assert peak_overlap([(t["created_at"], t["finished_at"]) for t in server_tasks(api)]) == 1
    sizes = sorted((probe(Path(e.output)).width, probe(Path(e.output)).n_frames) for e in result.entries)
    assert sizes == [(352, 10), (352, 15), (640, 10)]


def test_a_row_left_submitting_is_not_submitted_twice(make_api, tmp_path):
    """The crash between the committed 'submitting' and the answer: the task exists, the row has no id."""
    api = make_api(workers=1)
    rows = parse_rows("a red kite\n")
    path = tmp_path / "j.sqlite"
    body = Core.create_body("a red kite", n_frames=15)
    with Journal(path) as jr:
        jr.sync(rows)
        jr.update(jr.entries[0], state="submitting", idem_key="k" * 32, body=body, submitted_at=time.time())
    r = api.client.post("/backend/nf/create", json=body, headers={**api.alice, "Idempotency-Key": "k" * 32})
    original = r.json()["id"]
    with client_for(api) as client:
        result = run_batch(client, rows, path, tmp_path / "out", poll_interval=0.05)
    assert result.exit_code == 0 and result.entries[0].task_id == original
    assert [t["id"] for t in server_tasks(api)] == [original]
    with Journal(path) as jr:
        assert "found on the server: adopted, not sent again" in [e["detail"] for e in jr.events()]


def test_resend_with_the_same_key_replays_the_task(make_api, tmp_path):
    """When nothing is found by looking, the row goes out again under its stored key: sorakit replays."""
    api = make_api(workers=1)
    rows = parse_rows("a red kite\n")
    path = tmp_path / "j.sqlite"
    body = Core.create_body("a red kite", n_frames=15)
    r = api.client.post("/backend/nf/create", json=body, headers={**api.alice, "Idempotency-Key": "q" * 32})
    original = r.json()["id"]
    with Journal(path) as jr:
        jr.sync(rows)
        # recorded as sent "later" than the task's creation, so the search for it finds nothing
        jr.update(jr.entries[0], state="submitting", idem_key="q" * 32, body=body,
                  submitted_at=time.time() + 60)
    with client_for(api) as client:
        result = run_batch(client, rows, path, tmp_path / "out", poll_interval=0.05)
    assert result.exit_code == 0 and result.entries[0].task_id == original
    assert len(server_tasks(api)) == 1
    with Journal(path) as jr:
        details = [e["detail"] for e in jr.events()]
    assert "found on the server: adopted, not sent again" not in details and "submitted" in details


# -- the command, over the embedded default server ------------------------------------------------
def invoke(args: list[str], cwd: Path):
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(app, ["batch", *args])
    finally:
        os.chdir(old)


def test_daily_limit_stops_submitting_and_exits_4(tmp_path, monkeypatch):
    monkeypatch.setenv("SORAKIT_DEFAULT_DAILY_LIMIT", "2")
    write(tmp_path / "p.txt", "kite one\nkite two\nkite three\nkite four\n")
    r = invoke(["p.txt", "--frames", "15", "--poll-interval", "0.1"], tmp_path)
    assert r.exit_code == 4, r.output
    assert "4 video(s) to make but the daily quota has 2 left" in r.stderr
    assert "2 done, 0 failed, 2 pending of 4" in r.stdout
    assert "Stopped by the daily limit: the quota resets at" in r.stdout
    assert len(list(tmp_path.glob("*.mp4"))) == 2
    states = [row["state"] for row in journal_rows(tmp_path / ".sorakit-batch-p.sqlite")]
    assert states == ["done", "done", "pending", "pending"]
    # again, as JSON: nothing more can be made; the reset time is there for scripts
    r = invoke(["p.txt", "--frames", "15", "--json"], tmp_path)
    summary = json.loads(r.stdout)
    assert r.exit_code == 4 and summary["daily_limit_reached"] and summary["quota_resets_in_seconds"] > 0
    assert (summary["done"], summary["pending"]) == (2, 2)


def test_failed_rows_stay_failed_unless_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("SORAKIT_BLOCKED_TERMS", "forbidden")
    write(tmp_path / "p.csv", "prompt,n_frames\na calm lake,15\na forbidden dance,15\n")
    db = tmp_path / "default-data" / "sorakit.db"
    r = invoke(["p.csv", "--poll-interval", "0.1"], tmp_path)
    assert r.exit_code == 1, r.output
    assert "1 done, 1 failed, 0 pending of 2" in r.stdout and "--retry-failed" in r.stdout
    first = {row["idx"]: row for row in journal_rows(tmp_path / ".sorakit-batch-p.sqlite")}
    assert first[2]["state"] == "failed" and first[2]["reason"] and len(server_tasks(db)) == 2
    assert "row 2 failed:" in r.stdout

    r = invoke(["p.csv", "--poll-interval", "0.1"], tmp_path)  # no flag: nothing is sent
    assert r.exit_code == 1 and len(server_tasks(db)) == 2

    r = invoke(["p.csv", "--poll-interval", "0.1", "--retry-failed", "--json"], tmp_path)
    assert r.exit_code == 1, r.output
    again = {row["idx"]: row for row in journal_rows(tmp_path / ".sorakit-batch-p.sqlite")}
    assert again[2]["state"] == "failed" and again[2]["task_id"] != first[2]["task_id"]
    assert again[2]["idem_key"] != first[2]["idem_key"]
    assert again[1]["task_id"] == first[1]["task_id"]  # the done row was left alone
    assert {t["id"] for t in server_tasks(db)} == {first[1]["task_id"], first[2]["task_id"], again[2]["task_id"]}


def test_bad_input_is_a_usage_error_before_anything_is_sent(tmp_path):
    write(tmp_path / "p.jsonl", '{"prompt": "a"}\n{"prompt": "b", "orientation": "sideways"}\n')
    r = invoke(["p.jsonl"], tmp_path)
    assert r.exit_code == 2 and "line 2 (row 2): unknown orientation 'sideways'" in r.output
    assert not (tmp_path / "default-data" / "sorakit.db").exists()


# -- crash-proof, over real processes -----------------------------------------------------------
@pytest.mark.slow
def test_sigkilled_batch_resumes_without_submitting_twice(tmp_path):
    data, work = tmp_path / "server", tmp_path / "work"
    work.mkdir()
    write(work / "prompts.txt", "# twelve videos\n" + "".join(f"a paper boat number {i}\n" for i in range(12)))
    journal = work / "out" / ".sorakit-batch-prompts.sqlite"
    env = {"SORAKIT_DEFAULT_CONCURRENCY": "3", "SORAKIT_WORKERS": "3"}
    with ServerProcess(data, env=env, args=["--preview-pace", "0.8"]) as server:
        cmd = [sys.executable, "-m", "sorakit", "batch", "prompts.txt", "--server", server.url,
               "--token", server.token, "--out-dir", "out", "--frames", "15", "--poll-interval", "0.2"]
        client_env = {k: v for k, v in os.environ.items() if not k.startswith("SORAKIT_")}
        client_env["SORAKIT_CONFIG_DIR"] = str(tmp_path / "cfg")

        def states() -> list[str]:
            try:
                return [r["state"] for r in journal_rows(journal)]
            except sqlite3.Error:
                return []

        def run_until(condition, timeout=30.0) -> bool:
            """Start the batch; SIGKILL it once ``condition(states)`` holds. False: it ended first."""
            proc = subprocess.Popen(cmd, cwd=work, env=client_env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
            deadline = time.monotonic() + timeout
            try:
                while proc.poll() is None and time.monotonic() < deadline:
                    if condition(states()):
                        os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait(10)
                        return True
                    time.sleep(0.01)
                assert proc.poll() is not None, "the batch hung"
                return False
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)

        kills = 0
        kills += run_until(lambda s: any(x in ("submitting", "submitted") for x in s))
        kills += run_until(lambda s: s.count("done") >= 1 and "submitted" in s)
        kills += run_until(lambda s: s.count("done") >= 6 and s.count("done") < 12)
        assert kills >= 2, "the batch finished before it could be killed"
        for _ in range(5):
            r = subprocess.run([*cmd, "--json"], cwd=work, env=client_env, capture_output=True, text=True,
                               timeout=120)
            if r.returncode == 0:
                break
        assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
        summary = json.loads(r.stdout)
        assert (summary["done"], summary["failed"], summary["pending"]) == (12, 0, 0)

    tasks = server_tasks(data / "sorakit.db")
    assert len(tasks) == 12, "a row was submitted twice"
    assert sorted(t["prompt"] for t in tasks) == sorted(f"a paper boat number {i}" for i in range(12))
    assert all(t["status"] == "succeeded" for t in tasks)
    assert peak_overlap([(t["created_at"], t["finished_at"]) for t in tasks]) <= 3
    sidecars = check_videos(work / "out", 12, 15)
    rows = journal_rows(journal)
    assert {r["task_id"] for r in rows} == {t["id"] for t in tasks} == {s["task_id"] for s in sidecars}
    assert all(r["sha256"] == sha256(Path(r["output"])) for r in rows)
    if os.environ.get("BATCH_DEBUG"):
        for ev in journal_events(journal):
            print(f'{ev["at"]:.3f}', ev["idx"], ev["state"], ev["task_status"], ev["detail"])
        print("kills", kills)
    # rows the journal had sent whose tasks were not finished at the server: never more than 3
    events = journal_events(journal)
    sent = {e["idx"]: e["at"] for e in reversed(events) if e["state"] == "submitted"}  # first time each
    finished = {r["idx"]: next(t["finished_at"] for t in tasks if t["id"] == r["task_id"]) for r in rows}
    assert peak_overlap([(sent[i], finished[i]) for i in sent]) <= 3
    # the cap is learned, not fought: at most one 429 a run (each run may start not knowing it)
    refusals = sum(1 for e in events if (e["detail"] or "").startswith("server busy"))
    assert refusals <= kills + 1
    assert not any("429" in (r["reason"] or "") for r in rows)
