"""Starting the CLI is cheap (issue 13): ``--help`` and ``status`` import no server, database or
array code; a client of an ``http://`` server builds no SSL context; ``generate`` on the embedded
server returns soon after the video is ready.

Behaviour is asserted (which modules a real process imported, how many SSL contexts were made,
which poll interval the client runs with); where a time is asserted, the bound is generous and
says why. The figures themselves are in ``benchmarks/cli_startup.py`` and
``benchmarks/embedded_latency.py``.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import ssl
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx2
import pytest
from typer.testing import CliRunner

from sorakit.cli import main as cli_main
from sorakit.cli.connect import EMBEDDED_POLL, REMOTE_POLL, connect
from sorakit.cli.serve import local_token
from sorakit.client import AsyncSoraClient, RetryPolicy, SoraClient
from sorakit.client.embedded import EmbeddedServer
from sorakit.config import load_settings

#: what neither ``--help`` nor ``status`` may import: the server and what only it needs
HEAVY = ("sorakit.server", "sorakit.store", "sorakit.engines", "sorakit.worker", "sorakit.media", "sorakit.batch",
         "sqlalchemy", "numpy", "PIL", "av", "torch", "fastapi", "uvicorn", "starlette")

# Runs the CLI as ``python -m sorakit ARGS`` does, then prints every module it imported.
PROBE = """
import json, runpy, sys
sys.argv = ["sorakit", *json.loads(sys.argv[1])]
code = 0
try:
    runpy.run_module("sorakit", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code or 0
print("\\n@modules " + json.dumps(sorted(sys.modules)))
sys.exit(code)
"""


def run_cli(args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SORAKIT_")}
    env.update(SORAKIT_DATA_DIR=str(tmp_path / "data"), SORAKIT_CONFIG_DIR=str(tmp_path / "cfg"))
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], env=env, capture_output=True,
                          text=True, timeout=120)
    head, _, modules = done.stdout.rpartition("\n@modules ")
    assert modules, f"no module list\nstdout: {done.stdout}\nstderr: {done.stderr}"
    done.stdout = head
    return done, set(json.loads(modules))


def imported(modules: set[str], names) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


# -- which modules a command imports ----------------------------------------------------------
def test_help_imports_no_command_and_nothing_heavy(tmp_path):
    done, modules = run_cli(["--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    for entry in cli_main.COMMANDS:  # every command listed, with its help line
        assert entry.name in done.stdout
    assert imported(modules, HEAVY) == []
    # not even the HTTP client, or any command's module: listing them costs nothing
    assert imported(modules, ("httpx2", "httpcore2", "pydantic", "jwt", "sorakit.client")) == []
    assert sorted(m for m in modules if m.startswith("sorakit.cli.")) == ["sorakit.cli.main"]
    # printing a list needs no command-line framework: typer and rich are most of the start-up
    assert imported(modules, ("typer", "click", "rich")) == []


def test_no_arguments_shows_the_same_help(tmp_path):
    done, modules = run_cli([], tmp_path)
    assert done.returncode == 2 and "Commands" in done.stdout + done.stderr
    assert imported(modules, (*HEAVY, "httpx2", "typer")) == []
    assert done.stdout == run_cli(["--help"], tmp_path)[0].stdout


def test_the_quick_help_says_what_the_typer_app_has():
    """The top-level help is printed without typer: its options and commands must be the app's."""
    import typer

    group = typer.main.get_command(cli_main.app)  # as app() runs it: completion options included
    ctx = group.context_class(group, info_name="sorakit")
    app_options = sorted(o for p in group.get_params(ctx) for o in p.opts if o.startswith("--"))
    assert sorted(name for name, _ in cli_main._ROOT_OPTIONS) == app_options
    assert group.help == cli_main.DESCRIPTION
    text = cli_main.quick_help(width=80)
    assert all(len(line) <= 80 for line in text.splitlines())
    flat = " ".join(text.split())
    for entry in cli_main.COMMANDS:
        assert f" {entry.name} {entry.help}" in flat
    assert sorted(group.list_commands(ctx)) == sorted(e.name for e in cli_main.COMMANDS)


@pytest.fixture
def server(tmp_path):
    """A real sorakit server on 127.0.0.1 (no workers), and a token of its user ``local``."""
    settings = load_settings({"data_dir": tmp_path / "server", "workers": 0})
    with EmbeddedServer(settings) as embedded:
        yield embedded.url, local_token(embedded.services)


def test_status_against_a_server_imports_the_client_but_not_the_server(tmp_path, server):
    url, token = server
    done, modules = run_cli(["status", "--server", url, "--token", token], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no pending tasks" in done.stdout
    assert "httpx2" in modules and "sorakit.cli.tasks" in modules  # it did talk to the server
    assert imported(modules, HEAVY) == []


def test_status_json_against_a_server(tmp_path, server):
    url, token = server
    done, modules = run_cli(["status", "--server", url, "--token", token, "--json"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    assert imported(modules, HEAVY) == []


# -- the lazy commands ----------------------------------------------------------------------------
def first_paragraph(text: str) -> str:
    return inspect.cleandoc(text or "").split("\n\n")[0].replace("\n", " ").strip()


@pytest.mark.parametrize("entry", cli_main.COMMANDS, ids=lambda e: e.name)
def test_each_listed_help_line_is_the_commands_own(entry):
    """``sorakit --help`` lists a help line written in main.py: it must say what the command says."""
    command = cli_main.load_command(entry)
    assert command.name == entry.name
    assert first_paragraph(command.help) == entry.help


def test_every_command_still_has_its_own_help_and_options():
    runner = CliRunner()
    for entry in cli_main.COMMANDS:
        result = runner.invoke(cli_main.app, [entry.name, "--help"])
        assert result.exit_code == 0, (entry.name, result.output)
        assert entry.help.split()[0] in result.output
    result = runner.invoke(cli_main.app, ["status", "--help"])
    assert "--max-outage" in result.output and "--json" in result.output
    result = runner.invoke(cli_main.app, ["nosuch"])
    assert result.exit_code == 2 and "No such command" in result.output


# -- no SSL context for http:// -------------------------------------------------------------------
@pytest.fixture
def ssl_contexts(monkeypatch) -> list[ssl.SSLContext]:
    """Every SSLContext made from now on (ssl.create_default_context and httpcore2 both make theirs
    through ``ssl.SSLContext``)."""
    made: list[ssl.SSLContext] = []
    original = ssl.SSLContext.__new__

    def counting(cls, *args, **kwargs):
        context = original(cls, *args, **kwargs)
        made.append(context)
        return context

    monkeypatch.setattr(ssl.SSLContext, "__new__", counting)
    return made


@pytest.fixture
def plain_server():
    """A plain-HTTP server that answers every GET with ``[]`` (an empty pending list)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_client_of_an_http_server_makes_no_ssl_context(ssl_contexts, plain_server):
    with SoraClient(plain_server, "t", retry=RetryPolicy(max_outage=0)) as client:
        assert client.pending() == []
        assert client.pending() == []
    assert ssl_contexts == []


def test_the_async_client_of_an_http_server_makes_no_ssl_context(ssl_contexts, plain_server):
    async def run():
        async with AsyncSoraClient(plain_server, "t", retry=RetryPolicy(max_outage=0)) as client:
            return await client.pending()

    assert asyncio.run(run()) == []
    assert ssl_contexts == []


def test_https_still_gets_a_verifying_context_when_first_used(ssl_contexts):
    with SoraClient("https://127.0.0.1:1", "t", retry=RetryPolicy(max_outage=0)) as client:
        assert ssl_contexts == []  # made on first use, not with the client
        with pytest.raises(httpx2.ConnectError):
            client._http.get("https://127.0.0.1:1/")
    assert len(ssl_contexts) == 1
    assert ssl_contexts[0].verify_mode == ssl.CERT_REQUIRED and ssl_contexts[0].check_hostname


def test_an_injected_transport_is_used_as_given():
    seen = []
    transport = httpx2.MockTransport(lambda request: seen.append(request.url) or httpx2.Response(200, json=[]))
    with SoraClient("https://example.test", "t", transport=transport) as client:
        assert client.pending() == []
    assert [str(u) for u in seen] == ["https://example.test/backend/nf/pending/v2"]


# -- generate on the embedded server --------------------------------------------------------------
def test_the_embedded_server_is_polled_often_and_a_remote_one_at_the_web_cadence(tmp_path, monkeypatch, server):
    monkeypatch.setenv("SORAKIT_CONFIG_DIR", str(tmp_path / "cfg"))
    url, token = server
    with connect(url, token) as remote:
        assert remote.embedded is None
        assert remote.client.core.poll_interval == REMOTE_POLL and remote.client.core.poll_max == 10.0
    with connect() as local:
        assert local.embedded is not None
        assert local.client.core.poll_interval == (EMBEDDED_POLL, EMBEDDED_POLL) == (0.3, 0.3)
        assert local.client.core.poll_max == EMBEDDED_POLL  # no slowing down while a video renders


def test_generate_on_the_embedded_server_returns_soon_after_the_video_is_finished(tmp_path, monkeypatch):
    """The delay from the task's ``finished_at`` to ``generate`` returning (noticing the video,
    downloading it, writing its sidecar): 0.3 s polls make it about 0.2-0.4 s (the target is at
    most 0.5 s; ``benchmarks/embedded_latency.py`` measures it). The bound here is 1.5 s on the
    median of three, for a loaded test machine. Polling at the remote cadence (2-3 s) would put
    that median above 1.5 s only about a third of the time: the interval itself is checked by
    the test above; this one checks the whole path end to end."""
    monkeypatch.setenv("SORAKIT_CONFIG_DIR", str(tmp_path / "cfg"))
    delays = []
    with connect() as conn:  # no server configured: the embedded one, as the CLI does
        store = conn.embedded.services.store
        for n in range(3):
            result = conn.client.generate(f"a kite over the sea, take {n}", n_frames=15,
                                          output=str(tmp_path / "{task_id}.mp4"))
            returned = time.time()
            delays.append(returned - store.task(result.task["id"])["finished_at"])
            assert result.path.is_file()
    assert all(d >= 0 for d in delays)
    assert statistics.median(delays) < 1.5, delays
