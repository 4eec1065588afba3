"""Issue 9: the openai npm package runs an app's whole workflow against /v1/videos unchanged.

``scripts/test`` (so ``.ci/run``) installs the pinned package into ``tests/node``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from sorakit.media.encode import probe

try:
    from test_v1_videos import Server
except ImportError:  # pragma: no cover
    from tests.test_v1_videos import Server

NODE_DIR = Path(__file__).parent / "node"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_openai_npm_package_creates_polls_downloads_lists_and_deletes(tmp_path):
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("the openai npm package is missing: `bash scripts/test` installs it into tests/node")
    server = Server(tmp_path / "data")
    try:
        out = tmp_path / "node.mp4"
        env = {**os.environ, "SORAKIT_URL": server.url, "SORAKIT_KEY": server.key("node-app"),
               "SORAKIT_OUT": str(out)}
        done = subprocess.run(["node", str(NODE_DIR / "v1_videos.mjs")], capture_output=True, text=True,
                              timeout=120, env=env, cwd=NODE_DIR)
    finally:
        server.embedded.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert (seen["status"], seen["size"], seen["seconds"]) == ("completed", "1280x720", "4")
    assert seen["progress"] == sorted(seen["progress"]) and seen["progress"][-1] == 100
    assert set(seen["pollAfter"]) <= {"1000", "2000"}
    assert seen["listed"] == [seen["id"]]
    assert seen["deleted"] == {"id": seen["id"], "object": "video.deleted", "deleted": True}
    assert seen["notFound"]
    info = probe(out)
    assert (info.width, info.height, info.n_frames) == (1280, 720, 120)
