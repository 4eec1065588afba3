"""The seed document's own clients, run unmodified against a real ``sorakit serve`` on 127.0.0.1.

The seed (``shared/seed/000_18c672d2451d5af8.txt``) is the reverse-engineered description of the
Sora web backend that sorakit stands in for. Its Python script and cURL lines are extracted from it
at test time and run verbatim, with only the host, token and cookie filled in; its "Workflow
Logic" pseudocode is run as a small Node.js ``fetch`` program.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from sorakit.media.encode import probe

try:
    from serverproc import ServerProcess
except ImportError:  # tests/ made a package
    from tests.serverproc import ServerProcess

SEED_NAME = "000_18c672d2451d5af8.txt"
# read at import: the autouse fixture of conftest.py clears SORAKIT_* variables for each test
_SEED_ENV = os.environ.get("SORAKIT_SEED_FILE")
LIVE_HOST = "https://sora.chatgpt.com"
COOKIE = "oai-did=6f1b6c2e-3a4d-4e8f-9b0a-1c2d3e4f5a6b; _cfuvid=Xk3v9QpL2mN8rT5w.1767225600-0.0.1.1-604800000"
PORTRAIT = (352, 640)  # width, height of small portrait
LANDSCAPE = (640, 352)


def seed_path() -> Path | None:
    candidates = [Path(_SEED_ENV)] if _SEED_ENV else []
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "seed" / SEED_NAME)
    return next((p for p in candidates if p.is_file()), None)


@pytest.fixture(scope="module")
def seed_text() -> str:
    path = seed_path()
    if path is None:
        pytest.skip(f"seed document {SEED_NAME} not found (set SORAKIT_SEED_FILE to its path)")
    return path.read_text(encoding="utf-8")


def _section(text: str, heading: str, next_heading: str | None) -> str:
    start = text.index(heading)
    end = text.index(next_heading, start) if next_heading else len(text)
    return text[start:end]


def _fenced(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def seed_python_script(text: str) -> str:
    blocks = _fenced(_section(text, "### Step 3: Run via Python", "### Step 4"), "python")
    assert len(blocks) == 1, "the seed's Step 3 should hold exactly one python block"
    return blocks[0]


def seed_curl_lines(text: str) -> tuple[str, str]:
    blocks = _fenced(_section(text, "### Step 2: Run via cURL", "### Step 3"), "bash")
    assert len(blocks) == 2, "the seed's Step 2 should hold the Create and Check Status blocks"
    return blocks[0], blocks[1]


def fill_in(source: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in source, f"placeholder {old!r} missing from the seed's code"
        source = source.replace(old, new)
    return source


def client_env() -> dict[str, str]:
    """The clients' environment: unbuffered output, and no proxy between them and 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SORAKIT_")}
    env.update(PYTHONUNBUFFERED="1", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


def assert_video(path: Path, size: tuple[int, int], n_frames: int = 300) -> None:
    info = probe(path)
    assert (info.width, info.height) == size, info
    assert info.n_frames == n_frames, info
    assert info.codec == "h264", info


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    proc = ServerProcess(tmp_path_factory.mktemp("seed-server"))
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


# -- Step 3: the seed's Python script -------------------------------------------------------------


def python_script(seed_text: str, server: ServerProcess) -> str:
    # time.sleep(10) stays: the finished-task window (300 s by default) covers a 10 s poll easily
    return fill_in(seed_python_script(seed_text), {
        LIVE_HOST: server.url, "YOUR_BEARER_TOKEN_HERE": server.token, "YOUR_COOKIE_STRING_HERE": COOKIE})


def test_seed_python_script_gets_a_video(seed_text, server, tmp_path):
    script = tmp_path / "sora_seed.py"
    script.write_text(python_script(seed_text, server), encoding="utf-8")

    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env=client_env())

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Task Started: task_" in done.stdout, done.stdout
    found = re.search(r"^VIDEO READY: (\S+)$", done.stdout, flags=re.M)
    assert found, done.stdout
    url = found.group(1)
    assert url.startswith(server.url + "/"), url
    assert "se=" in url and "sig=" in url, url  # a signed link, like the live Azure SAS URLs

    reply = requests.get(url, timeout=30)  # a capability URL: no credentials at all
    assert reply.status_code == 200, reply.text[:300]
    video = tmp_path / "video.mp4"
    video.write_bytes(reply.content)
    assert_video(video, PORTRAIT)


# -- Step 2: the seed's cURL lines ----------------------------------------------------------------


def _bash(command: str, tmp_path: Path) -> str:
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30,
                          cwd=tmp_path, env=client_env())
    assert done.returncode == 0, f"{command}\n-> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="the curl binary is not installed")
def test_seed_curl_lines(seed_text, server, tmp_path):
    create, check = (fill_in(block, {LIVE_HOST: server.url, "<YOUR_TOKEN>": server.token,
                                     "<YOUR_COOKIE_STRING>": COOKIE})
                     for block in seed_curl_lines(seed_text))

    created = json.loads(_bash(create, tmp_path))
    task_id = created["id"]
    assert task_id.startswith("task_") and created["status"] == "pending", created

    deadline = time.monotonic() + 30
    while True:
        tasks = json.loads(_bash(check, tmp_path))
        assert isinstance(tasks, list), tasks
        mine = next((t for t in tasks if t["id"] == task_id), None)
        if mine is not None and mine["status"] == "succeeded":
            break
        assert mine is None or mine["status"] not in ("failed", "cancelled"), mine
        assert time.monotonic() < deadline, f"task not done in 30 s: {mine}"
        time.sleep(0.5)

    assert (mine["width"], mine["height"]) == LANDSCAPE, mine
    url = mine["generations"][0]["url"]
    _bash(f"curl -sS -f -o video.mp4 {shlex.quote(url)}", tmp_path)
    assert_video(tmp_path / "video.mp4", LANDSCAPE)


# -- Section 3: the seed's "Workflow Logic", as a Node.js fetch loop ----------------------------

NODE_CLIENT = r"""
const fs = require('fs');
const BASE = process.env.SORA_BASE, TOKEN = process.env.SORA_TOKEN, COOKIE = process.env.SORA_COOKIE;
const HEADERS = {'Authorization': `Bearer ${TOKEN}`, 'Cookie': COOKIE, 'Content-Type': 'application/json'};
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

async function post(path, body) {
    const r = await fetch(BASE + path, {method: 'POST', headers: HEADERS, body: JSON.stringify(body)});
    if (!r.ok) throw new Error(`POST ${path}: ${r.status} ${await r.text()}`);
    return r.json();
}
async function get(path) {
    const r = await fetch(BASE + path, {headers: HEADERS});
    if (!r.ok) throw new Error(`GET ${path}: ${r.status} ${await r.text()}`);
    return r.json();
}
async function downloadFile(url, file) {
    const r = await fetch(url);  // a signed link: no credentials
    if (!r.ok) throw new Error(`download: ${r.status}`);
    fs.writeFileSync(file, Buffer.from(await r.arrayBuffer()));
}

async function createAndDownloadSoraVideo(prompt) {
    // 1. Send Create Request
    const task = await post('/backend/nf/create', { prompt, model: 'sy_8' });
    const taskId = task.id;

    // 2. Poll for Completion
    let videoUrl = null;
    while (!videoUrl) {
        await sleep(1000);
        const tasks = await get('/backend/nf/pending/v2');
        const myTask = tasks.find(t => t.id === taskId);
        if (!myTask) continue;  // a brand-new task can miss a poll or two
        if (myTask.status === 'succeeded') {
            videoUrl = myTask.generations[0].url;
        } else if (myTask.status === 'failed') {
            throw new Error(myTask.failure_reason);
        }
    }

    // 3. Download
    const file = `sora_${taskId}.mp4`;
    await downloadFile(videoUrl, file);
    console.log(`SAVED ${file}`);
}

createAndDownloadSoraVideo('A paper boat drifting down a rainy street')
    .catch(err => { console.error(err); process.exit(1); });
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_seed_workflow_logic_in_node(server, tmp_path):
    script = tmp_path / "sora_workflow.js"
    script.write_text(NODE_CLIENT, encoding="utf-8")
    env = {**client_env(), "SORA_BASE": server.url, "SORA_TOKEN": server.token, "SORA_COOKIE": COOKIE}

    done = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=45,
                          cwd=tmp_path, env=env)

    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"^SAVED (sora_task_\w+\.mp4)$", done.stdout, flags=re.M)
    assert found, done.stdout
    assert_video(tmp_path / found.group(1), PORTRAIT)


# -- the live service's behaviour: finished tasks leave the pending list at once -----------------


def test_seed_python_script_cannot_see_finished_tasks_without_a_window(seed_text, tmp_path):
    """With ``finished_window_seconds = 0`` (what the live service did), a task vanishes from
    ``pending/v2`` the moment it finishes, and the seed script, which polls every 10 s and waits for
    ``succeeded`` there, never sees its video: it reports the task missing, forever. sorakit's
    default window exists so that this script works (test above)."""
    with ServerProcess(tmp_path / "data", env={"SORAKIT_FINISHED_WINDOW_SECONDS": "0"}) as server:
        script = tmp_path / "sora_seed.py"
        script.write_text(python_script(seed_text, server), encoding="utf-8")
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=client_env())
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            for line in proc.stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        seen: list[str] = []
        deadline = time.monotonic() + 25  # the script loops forever; it polls at t = 0, 10, 20 s
        try:
            while time.monotonic() < deadline:
                try:
                    line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
                except queue.Empty:
                    break
                if line is None:
                    break
                seen.append(line)
                if line == "Task not found in pending list (check history?)":
                    break
        finally:
            proc.kill()
            proc.wait(10)

        output = "\n".join(seen)
        assert "Task not found in pending list (check history?)" in seen, output
        assert "VIDEO READY" not in output, output
        task_id = re.search(r"Task Started: (task_\w+)", output).group(1)
        # the video was made all the same: only the seed's way of looking for it fails
        task = server.request("GET", f"/backend/nf/tasks/{task_id}/v2").json()
        assert task["status"] == "succeeded" and task["generations"], task
        assert server.request("GET", "/backend/nf/pending/v2").json() == []
