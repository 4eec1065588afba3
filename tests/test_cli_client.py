"""The client commands as a user runs them: real processes, the embedded default, real files."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serverproc import ServerProcess

from sorakit.cli.login import parse_curl
from sorakit.media.encode import probe

pytestmark = pytest.mark.slow

CHROME_CURL = r"""curl 'https://sora.chatgpt.com/backend/nf/create' \
  -H 'accept: */*' \
  -H 'authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig' \
  -H 'content-type: application/json' \
  -b 'oai-did=0f0e; _cfuvid=abc' \
  -H 'oai-device-id: 0f0e0000-0000-4000-8000-000000000000' \
  -H 'openai-sentinel-token: {"p":"x"}' \
  -H 'user-agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/144.0.0.0 Safari/537.36' \
  --data-raw '{"kind":"video","prompt":"x"}'"""


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SORAKIT_")}
    return {**clean, "SORAKIT_DATA_DIR": str(tmp_path / "data"), "SORAKIT_CONFIG_DIR": str(tmp_path / "cfg")}


def sorakit(args, env, cwd, timeout=120, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "sorakit", *args], env=env, cwd=cwd, capture_output=True,
                       text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r


def test_generate_on_a_clean_machine_uses_the_embedded_default(tmp_path, env):
    work = tmp_path / "somewhere"
    work.mkdir()
    r = sorakit(["generate", "a red kite over a grey sea", "--seconds", "5"], env, work)
    videos = list(work.glob("sora_task_*.mp4"))
    assert len(videos) == 1 and videos[0].name in r.stdout
    info = probe(videos[0])
    assert (info.width, info.height, info.n_frames) == (352, 640, 150)
    sidecar = json.loads(Path(str(videos[0]) + ".json").read_text())
    assert sidecar["prompt"] == "a red kite over a grey sea" and sidecar["task_id"] in videos[0].name
    assert sidecar["sha256"] and sidecar["generation_id"].startswith("gen_")
    assert "succeeded" in r.stderr or "downloading" in r.stderr  # the progress bar was shown
    assert (tmp_path / "data" / "local.token").is_file()


def test_no_wait_then_status_download_list_usage(tmp_path, env):
    r = sorakit(["generate", "lighthouse at dusk", "--frames", "20", "--orientation", "landscape",
                 "--no-wait", "--json"], env, tmp_path)
    task_id = json.loads(r.stdout)["task_id"]
    got = json.loads(sorakit(["download", task_id, "-o", "{prompt_slug}-{index}.mp4", "--json"], env, tmp_path).stdout)
    path = Path(got["path"])
    assert path == Path("lighthouse-at-dusk-000.mp4") and probe(tmp_path / path).n_frames == 20
    status = json.loads(sorakit(["status", task_id, "--json"], env, tmp_path).stdout)
    assert status[0]["status"] == "succeeded" and status[0]["width"] == 640
    drafts = json.loads(sorakit(["list", "--json"], env, tmp_path).stdout)
    assert [d["task_id"] for d in drafts] == [task_id]
    usage = json.loads(sorakit(["usage", "--json"], env, tmp_path).stdout)
    assert usage["rate_limit_and_credit_balance"]["estimated_num_videos_remaining"] == 99


def test_exit_codes(tmp_path, env):
    refused = sorakit(["generate", "an erupting volcano"], {**env, "SORAKIT_BLOCKED_TERMS": "volcano"},
                      tmp_path, check=False)
    assert refused.returncode == 6 and "volcano" in refused.stderr and "Traceback" not in refused.stderr
    bad = sorakit(["usage", "--token", "nonsense"], env, tmp_path, check=False)
    assert bad.returncode == 3 and "Could not parse your authentication token" in bad.stderr
    down = sorakit(["usage", "--server", "http://127.0.0.1:9"], {**env, "SORAKIT_TOKEN": "x"}, tmp_path, check=False)
    assert down.returncode == 8 and "connect" in down.stderr
    both = sorakit(["generate", "x", "--seconds", "5", "--frames", "3"], env, tmp_path, check=False)
    assert both.returncode == 2


def test_ctrl_c_detaches_and_the_task_can_be_picked_up(tmp_path, env):
    slow = {**env, "SORAKIT_PREVIEW_PACE": "30"}
    proc = subprocess.Popen([sys.executable, "-m", "sorakit", "generate", "slow clouds", "--frames", "30"],
                            env=slow, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(6)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Detached from task_" in err and "sorakit download task_" in err
    task_id = err.split("sorakit download ")[1].split()[0]
    r = sorakit(["download", task_id], env, tmp_path)  # no pace now: the resumed task finishes quickly
    assert probe(tmp_path / f"sora_{task_id}.mp4").n_frames == 30 and task_id in r.stdout


def test_parse_copy_as_curl():
    found = parse_curl(CHROME_CURL)
    assert found == {"server": "https://sora.chatgpt.com", "token": "eyJhbGciOiJIUzI1NiJ9.e30.sig",
                     "cookie": "oai-did=0f0e; _cfuvid=abc", "device_id": "0f0e0000-0000-4000-8000-000000000000",
                     "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/144.0.0.0 Safari/537.36"}


def test_login_saves_a_private_config_that_commands_use(tmp_path, env):
    with ServerProcess(tmp_path / "server") as server:
        curl = CHROME_CURL.replace("https://sora.chatgpt.com", server.url).replace(
            "eyJhbGciOiJIUzI1NiJ9.e30.sig", server.token)
        r = subprocess.run([sys.executable, "-m", "sorakit", "login", "--from-curl"], input=curl, env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert server.token not in r.stdout + r.stderr
        config = tmp_path / "cfg" / "client.toml"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert "sentinel" not in config.read_text()
        usage = json.loads(sorakit(["usage", "--json"], env, tmp_path).stdout)
        assert usage["rate_limit_and_credit_balance"]["estimated_num_videos_remaining"] == 100
