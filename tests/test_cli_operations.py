"""``sorakit remix | extend | storyboard | share | unshare`` and ``generate --variants``, as a
user runs them: real processes against a real ``sorakit serve``, real files, decoded."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from serverproc import ServerProcess

from sorakit.media.encode import probe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("server")) as running:
        yield running


@pytest.fixture
def env(tmp_path, server) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SORAKIT_")}
    return {**clean, "SORAKIT_DATA_DIR": str(tmp_path / "data"), "SORAKIT_CONFIG_DIR": str(tmp_path / "cfg"),
            "SORAKIT_SERVER": server.url, "SORAKIT_TOKEN": server.token}


def sorakit(args, env, cwd, timeout=120, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "sorakit", *args], env=env, cwd=cwd, capture_output=True,
                       text=True, timeout=timeout)
    if check:
        assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def made(env, cwd, *args) -> dict:
    """Run a creating command with --json; returns its answer, paths made absolute."""
    got = json.loads(sorakit([*args, "--json"], env, cwd).stdout)
    for video in got["videos"]:
        video["path"] = cwd / video["path"]
    return got


@pytest.fixture
def source(env, tmp_path) -> dict:
    return made(env, tmp_path, "generate", "a red kite over a grey sea", "--frames", "30",
                "--orientation", "landscape", "-o", "source.mp4")


def test_generate_variants_downloads_n_different_files(env, tmp_path):
    got = made(env, tmp_path, "generate", "three kites", "--frames", "30", "--variants", "3",
               "-o", "{prompt_slug}.mp4")
    paths = [v["path"] for v in got["videos"]]
    assert [p.name for p in paths] == ["three-kites-1.mp4", "three-kites-2.mp4", "three-kites-3.mp4"]
    assert got["path"] == "three-kites-1.mp4"  # the first video's keys stay where they were
    assert len({sha(p) for p in paths}) == 3 and all(probe(p).n_frames == 30 for p in paths)
    assert all(json.loads(Path(f"{p}.json").read_text())["n_variants"] == 3 for p in paths)
    plain = sorakit(["generate", "two kites", "--frames", "10", "--variants", "2", "-o", "two.mp4"], env, tmp_path)
    assert "two-1.mp4" in plain.stdout and "two-2.mp4" in plain.stdout
    assert probe(tmp_path / "two-2.mp4").n_frames == 10


def test_remix_a_draft_and_a_post(env, tmp_path, source):
    gen_id = source["generation_id"]
    got = made(env, tmp_path, "remix", gen_id, "a blue kite over a calm sea", "--strength", "0.7",
               "-o", "remix.mp4")
    remix = got["videos"][0]["path"]
    info = probe(remix)
    assert (info.width, info.height, info.n_frames) == (640, 352, 30)  # the source's, not given
    assert sha(remix) != sha(source["videos"][0]["path"])
    sidecar = json.loads(Path(f"{remix}.json").read_text())
    assert sidecar["operation"] == "remix" and sidecar["parameters"]["remix_strength"] == 0.7

    permalink = sorakit(["share", gen_id], env, tmp_path).stdout.strip()
    post_id = permalink.rsplit("/", 1)[1]
    got = made(env, tmp_path, "remix", post_id, "a green kite", "--seconds", "0.5", "-o", "from-post.mp4")
    assert probe(got["videos"][0]["path"]).n_frames == 15


def test_extend_downloads_a_longer_video(env, tmp_path, source):
    got = made(env, tmp_path, "extend", source["generation_id"], "--seconds", "1", "-o", "longer.mp4")
    before, after = probe(source["videos"][0]["path"]), probe(got["videos"][0]["path"])
    assert after.n_frames == before.n_frames + 30
    assert after.duration_s == pytest.approx(before.duration_s + 1, abs=0.05)
    r = sorakit(["extend", got["generation_id"], "the kite lands", "--seconds", "0.5", "-o", "{prompt_slug}.mp4"],
                env, tmp_path)
    assert "the-kite-lands.mp4" in r.stdout and probe(tmp_path / "the-kite-lands.mp4").n_frames == 75


def test_storyboard_from_a_text_file_and_a_toml_file(env, tmp_path):
    (tmp_path / "board.txt").write_text("# three shots\n\n1s: a cat walks in\n0.5: the cat jumps\n"
                                        "  0.5 s :  a close-up of the cat  \n")
    got = made(env, tmp_path, "storyboard", "board.txt", "-o", "board.mp4")
    info = probe(got["videos"][0]["path"])
    assert info.n_frames == 60 and info.duration_s == pytest.approx(2.0, abs=0.05)
    assert (info.width, info.height) == (352, 640)

    (tmp_path / "board.toml").write_text('instructions = "soft light"\norientation = "landscape"\n'
                                         '[[shots]]\nprompt = "a dog runs"\nseconds = 1\n'
                                         '[[shots]]\nprompt = "the dog sleeps"\nseconds = 0.5\n')
    got = made(env, tmp_path, "storyboard", "board.toml", "-o", "toml.mp4")
    info = probe(got["videos"][0]["path"])
    assert info.n_frames == 45 and (info.width, info.height) == (640, 352)
    params = json.loads(Path(f"{got['videos'][0]['path']}.json").read_text())["parameters"]
    assert params["instructions"] == "soft light"
    assert [s["prompt"] for s in params["shots"]] == ["a dog runs", "the dog sleeps"]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("bad.txt", "# ok\n1s: fine\n\na shot without a duration\n", "bad.txt, line 4: expected 'SECONDS: prompt'"),
    ("empty-prompt.txt", "1s: fine\n2s:   \n", "empty-prompt.txt, line 2: the shot has no prompt"),
    ("zero.txt", "0s: nothing\n", "zero.txt, line 1: a shot lasts more than 0 seconds"),
    ("none.txt", "# nothing here\n\n", "none.txt: no shots"),
    ("bad.toml", '[[shots]]\nprompt = "a"\nseconds = 1\n[[shots]]\nprompt = "b"\n', "bad.toml, shot 2: seconds"),
    ("typo.toml", '[[shots]]\nprompt = "a"\nsecs = 1\n', "typo.toml, shot 1: unknown key(s) secs"),
    ("broken.toml", "[[shots]\n", "broken.toml: not valid TOML"),
])
def test_a_bad_storyboard_file_names_the_line(env, tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    r = sorakit(["storyboard", name], env, tmp_path, check=False)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_share_prints_a_permalink_anyone_can_open_until_unshared(env, tmp_path, source):
    r = sorakit(["share", source["generation_id"], "--text", "my kite"], env, tmp_path)
    permalink = r.stdout.strip()
    assert permalink.startswith("http") and "/p/s_" in permalink and "sorakit unshare s_" in r.stderr
    page = requests.get(permalink, timeout=10)  # no credentials
    assert page.status_code == 200 and "my kite" in page.text
    post_id = permalink.rsplit("/", 1)[1]
    assert sorakit(["unshare", post_id], env, tmp_path).stdout.strip() == f"{post_id}: deleted"
    assert requests.get(permalink, timeout=10).status_code == 404


def test_unknown_sources_give_a_clear_message_and_a_failing_exit(env, tmp_path):
    for args, code in ((["extend", "gen_doesnotexist", "--seconds", "1"], 1),
                       (["remix", "gen_doesnotexist", "a new prompt"], 2),
                       (["share", "gen_doesnotexist"], None)):
        r = sorakit(args, env, tmp_path, check=False)
        assert r.returncode != 0 and (code is None or r.returncode == code), (args, r.returncode, r.stderr)
        assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr, r.stderr
        said = r.stderr.lower()
        assert "not found" in said or "no draft" in said or "gen_doesnotexist" in said, r.stderr
    bad = sorakit(["remix", "gen_x", "p", "--strength", "2"], env, tmp_path, check=False)
    assert bad.returncode == 2
    assert not list(tmp_path.glob("*.mp4"))


def test_download_of_a_variations_task_fetches_every_video(env, tmp_path):
    task_id = json.loads(sorakit(["generate", "four kites", "--frames", "10", "--variants", "2", "--no-wait",
                                  "--json"], env, tmp_path).stdout)["task_id"]
    out = sorakit(["download", task_id, "-o", "later.mp4"], env, tmp_path).stdout.split()
    assert out == ["later-1.mp4", "later-2.mp4"]
    assert sha(tmp_path / "later-1.mp4") != sha(tmp_path / "later-2.mp4")
    assert all(probe(tmp_path / name).n_frames == 10 for name in out)
