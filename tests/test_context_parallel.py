"""Context parallelism (engines/parallel.py, docs/parallel.md): the ``context_parallel`` setting, its
refusals, and real 2-process groups on the CPU.

The group tests start real processes with ``torchrun --standalone --nproc-per-node 2`` over gloo and
a tiny random-weight Wan: rank 0 renders, rank 1 follows, and the frames must equal one process's.
diffusers 0.42.1 needs an accelerator only to pick each rank's device
(``rank % torch.accelerator.device_count()``), so those processes report one device (cp_ranks.py,
cp_site/sitecustomize.py); the collectives, the sequence split and Ulysses' all-to-alls are real.
Ring attention needs CUDA kernels (flash, cuDNN, flash SDPA, Sage) and is not run here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sorakit.config import ConfigError
from sorakit.engines import parallel
from sorakit.engines.models import parse_spec

HERE = Path(__file__).parent
WAN = {"family": "wan", "path": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"}


def spec(**table):
    return parse_spec("m", {**WAN, **table})


def refused(match: str, **table):
    with pytest.raises(ConfigError, match=match) as caught:
        spec(**table)
    assert "models.m.context_parallel" in str(caught.value)
    return str(caught.value)


# -- the setting -------------------------------------------------------------------------------------

def test_the_setting_is_parsed_and_reported():
    s = spec(context_parallel={"ulysses": 2})
    assert s.context_parallel == {"ring": 1, "ulysses": 2, "anything": False}
    assert s.speed_switches  # loads and warms up at worker start, on every rank together
    assert parallel.degree(s) == 2
    ring = spec(context_parallel={"ring": 2, "ulysses": 2}, attention_backend="flash")
    assert parallel.degree(ring) == 4
    assert spec(context_parallel={"ring": 4, "anything": True}, attention_backend="_native_cudnn").context_parallel == {
        "ring": 4, "ulysses": 1, "anything": True}
    assert spec().context_parallel is None and parallel.degree(spec()) == 1
    assert spec(context_parallel=False).context_parallel is None
    assert spec(family="wan22-ti2v", context_parallel={"ulysses": 3}).context_parallel["ulysses"] == 3

    from sorakit.engines import speed

    assert speed.describe(s)["context_parallel"] == {"ring": 1, "ulysses": 2, "anything": False}
    assert "context_parallel" not in speed.describe(spec())  # drafts of other models are unchanged
    assert speed.summary(s) == "context_parallel=ulysses=2"
    assert speed.summary(ring) == "attention=flash, context_parallel=ring=2+ulysses=2"


@pytest.mark.parametrize("value, match", [
    ("ulysses:2", "must be a table"), (2, "must be a table"), ({}, "must be a table"),
    ({"ulysess": 2}, "unknown key"), ({"ulysses": 0}, "at least 1"), ({"ulysses": 2.0}, "whole number"),
    ({"ulysses": True}, "whole number"), ({"ulysses": 1}, "2 or more"), ({"ring": 1, "ulysses": 1}, "2 or more"),
    ({"ulysses": 2, "anything": "yes"}, "true or false"),
])
def test_malformed_values_are_refused(value, match):
    refused(match, context_parallel=value)


def test_anything_takes_one_mode():
    refused("one mode only", context_parallel={"ring": 2, "ulysses": 2, "anything": True}, attention_backend="flash")


@pytest.mark.parametrize("family, why", [
    ("cogvideox", "no context-parallel plan"), ("hunyuanvideo15", "no context-parallel plan"),
    ("ltx", "mask"), ("ltx2", "RoPE"),
])
def test_families_it_does_not_work_with_are_refused(family, why):
    message = refused(why, family=family, context_parallel={"ulysses": 2})
    assert "wan, wan22-ti2v" in message


def test_switches_it_cannot_run_with_are_refused():
    refused("device must be \"cuda\"", context_parallel={"ulysses": 2}, device="cuda:1")
    refused("device must be \"cuda\"", context_parallel={"ulysses": 2}, device="mps")
    refused("cpu_offload", context_parallel={"ulysses": 2}, cpu_offload=True)
    refused("cache", context_parallel={"ulysses": 2}, cache={"type": "first_block"})
    refused("does not support context parallelism", context_parallel={"ulysses": 2}, attention_backend="xformers")
    # ring merges chunks by their log-sum-exp: torch's SDPA (the default) cannot give it
    refused("log-sum-exp", context_parallel={"ring": 2})
    refused("log-sum-exp", context_parallel={"ring": 2}, attention_backend="native")
    for backend in ("native", "flash", "_native_cudnn", "sage"):
        assert spec(context_parallel={"ulysses": 2}, attention_backend=backend).context_parallel


def test_the_family_table_matches_the_installed_diffusers():
    """Which transformers have a ``_cp_plan``, and which backends diffusers lets context parallelism use."""
    pytest.importorskip("diffusers")
    import diffusers
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    from sorakit.engines.families import FAMILIES

    classes = {"wan": "WanTransformer3DModel", "wan22-ti2v": "WanTransformer3DModel",
               "ltx": "LTXVideoTransformer3DModel", "ltx2": "LTX2VideoTransformer3DModel",
               "cogvideox": "CogVideoXTransformer3DModel", "hunyuanvideo15": "HunyuanVideo15Transformer3DModel"}
    assert set(classes) == set(FAMILIES) == set(parallel.SUPPORTED) | set(parallel.REFUSED)
    plans = {family: getattr(diffusers, cls)._cp_plan is not None for family, cls in classes.items()}
    assert plans == {"wan": True, "wan22-ti2v": True, "ltx": True, "ltx2": True, "cogvideox": False,
                     "hunyuanvideo15": False}
    assert set(parallel.CP_BACKENDS) == _AttentionBackendRegistry._supports_context_parallel - {"_native_npu"}


def test_a_context_parallel_model_refuses_to_load_in_a_lone_process(tmp_path):
    pytest.importorskip("diffusers")
    from tiny_pipelines import save_pipeline

    from sorakit.engines import EngineError, RenderJob
    from sorakit.engines.diffusers_engine import DiffusersEngine

    path = save_pipeline("wan", tmp_path / "wan")
    engine = DiffusersEngine(parse_spec("m", {"family": "wan", "path": str(path), "device": "cpu",
                                              "context_parallel": {"ulysses": 2}}), tmp_path)
    assert parallel.current() is None and not parallel.leads(engine.spec)
    with pytest.raises(EngineError) as caught:
        engine.render(RenderJob("t", "a kite", 64, 32, 9, 16, seed=1), None)
    assert caught.value.code == "context_parallel"
    assert "torchrun --nproc-per-node 2 -m sorakit worker" in caught.value.reason
    # and torchrun's variables are read as such
    assert parallel.torchrun_env({}) is None and parallel.torchrun_env({"WORLD_SIZE": "1"}) is None
    assert parallel.torchrun_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "2"}) == (4, 2, 2)
    with pytest.raises(ConfigError, match="RANK"):
        parallel.torchrun_env({"WORLD_SIZE": "2"})


def test_start_checks_the_models_against_the_process_count():
    class Engine:
        def __init__(self, **cp):
            self.spec = spec(context_parallel=cp) if cp else spec()

    torchrun = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    assert parallel.start({"m": Engine(ulysses=2)}, 1, env={}) is None  # not under torchrun
    assert parallel.start({"m": Engine(ulysses=2)}, 1, spawned=True, env=torchrun) is None  # a `serve` child
    with pytest.raises(ConfigError, match="no \\[models\\] table sets context_parallel"):
        parallel.start({"m": Engine()}, 1, env=torchrun)
    with pytest.raises(ConfigError, match="--nproc-per-node 4"):
        parallel.start({"m": Engine(ulysses=4)}, 1, env=torchrun)
    with pytest.raises(ConfigError, match="--threads must be 1"):
        parallel.start({"m": Engine(ulysses=2)}, 2, env=torchrun)
    assert parallel.current() is None  # nothing was initialised


# -- real groups -------------------------------------------------------------------------------------

def _torchrun(*args, env=None):
    """``torchrun --standalone --nproc-per-node 2 ARGS`` in a session of its own (to end it whole)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _finish(run, timeout: float, stop: bool = False) -> str:
    """The run's output once it ended (``stop``: SIGTERM first, which torchrun passes on to the ranks);
    a run still going after ``timeout`` is killed with its ranks."""
    if stop:
        os.killpg(run.pid, signal.SIGTERM)
    try:
        return run.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        return run.communicate()[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    pytest.importorskip("diffusers")
    from tiny_pipelines import save_pipeline

    root = tmp_path_factory.mktemp("cp-weights")
    return {"t2v": save_pipeline("wan", root / "wan"), "i2v": save_pipeline("wan", root / "wan-i2v", i2v=True),
            "wan22": save_pipeline("wan22-ti2v", root / "wan22")}


def _model(weights, **extra):
    return {"family": "wan", "path": str(weights["t2v"]), "image_path": str(weights["i2v"]), "device": "cpu",
            "dtype": "float32", "steps": 2, "resolution": {"small": [64, 32]}, "max_frames": 9, **extra}


def _model22(weights, **extra):
    """Wan 2.2 TI2V: one checkpoint for text and image (``expand_timesteps``: per-token timesteps)."""
    return {"family": "wan22-ti2v", "path": str(weights["wan22"]), "device": "cpu", "dtype": "float32", "steps": 2,
            "resolution": {"small": [96, 64]}, "max_frames": 9, **extra}


def test_two_ranks_render_what_one_process_renders(weights, tmp_path):
    """Rank 0 drives, rank 1 follows: Wan's text, image and video to video, a cancel, an uneven split,
    a render after both, and Wan 2.2 TI2V's text and image to video on a second model; every
    finished render equals the single-process one of the same job."""
    from PIL import Image
    from tiny_pipelines import COLOURS, write_colour_video

    from sorakit.config import load_settings
    from sorakit.engines import RenderJob, build_engines

    image = tmp_path / "start.png"
    Image.new("RGB", (64, 32), (200, 80, 20)).save(image)
    image22 = tmp_path / "start22.png"
    Image.new("RGB", (96, 64), (20, 80, 200)).save(image22)
    source = write_colour_video(tmp_path / "source.mp4", COLOURS[:9], width=64, height=32, fps=16)
    base = {"prompt": "a red kite over a grey sea", "width": 64, "height": 32, "n_frames": 9, "fps": 16}
    jobs = [
        {"name": "t2v", "task_id": "t1", "seed": 7, **base},
        {"name": "i2v", "task_id": "t2", "seed": 8, "image": str(image), **base},
        {"name": "remix", "task_id": "t3", "seed": 9, "operation": "remix", "source": str(source), "strength": 0.8,
         **base},
        # stopped at the second denoising step on every rank (the first check is before the run)
        {"name": "cancelled", "task_id": "t4", "seed": 10, "cancel_after": 2, **{**base, "prompt": "x"}},
        # 48x48 and 9 frames are 27 tokens: they do not split over 2 ranks; every rank fails alike
        {"name": "uneven", "task_id": "t5", "seed": 11, **{**base, "width": 48, "height": 48}},
        {"name": "again", "task_id": "t6", "seed": 7, **base},
        # Wan 2.2 TI2V, a second model with a mesh of its own: 96x64, 9 frames = 3 x 2 x 3 tokens
        {"name": "t2v22", "model": "cp22", "task_id": "t7", "seed": 12, **{**base, "width": 96, "height": 64}},
        {"name": "i2v22", "model": "cp22", "task_id": "t8", "seed": 13, "image": str(image22),
         **{**base, "width": 96, "height": 64}},
    ]
    plan = {"data_dir": str(tmp_path / "data"), "model": "cp", "jobs": jobs,
            "models": {"cp": _model(weights, context_parallel={"ulysses": 2}),
                       "cp22": _model22(weights, context_parallel={"ulysses": 2})}}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    out = tmp_path / "out"
    out.mkdir()
    run = _torchrun(str(HERE / "cp_ranks.py"), str(tmp_path / "plan.json"), str(out))
    log = _finish(run, 600)
    assert run.returncode == 0, log[-4000:]
    assert "rank 1: following rank 0's context-parallel jobs" in log and "rank 1: rank 0 stopped" in log
    outcomes = json.loads((out / "outcomes.json").read_text())
    assert outcomes["preloaded"] is True  # loaded and warmed up on both ranks at once
    assert outcomes["speed"]["context_parallel"] == {"ring": 1, "ulysses": 2, "anything": False}
    for name in ("t2v", "i2v", "remix", "again", "t2v22", "i2v22"):
        assert outcomes[name]["status"] == "ok", (name, outcomes[name])
    assert outcomes["t2v"]["progress"] == pytest.approx(0.9)
    # 64x32 and 9 frames are 3 x 2 x 4 = 24 tokens: rank 0's attention saw its half of them
    assert outcomes["tokens"] and set(outcomes["tokens"]) <= {12}
    assert outcomes["cancelled"] == {"status": "cancelled", "checks": 3}
    assert outcomes["uneven"]["status"] == "failed" and outcomes["uneven"]["code"] == "context_parallel"
    assert "do not divide evenly" in outcomes["uneven"]["reason"] and "anything = true" in outcomes["uneven"]["reason"]

    # the same jobs in this one process, on the same weights without context_parallel
    alone = build_engines(load_settings({"data_dir": str(tmp_path / "alone"),
                                         "models": {"cp": _model(weights), "cp22": _model22(weights)}}, env={}))
    for spec_ in jobs:
        if outcomes[spec_["name"]]["status"] != "ok":
            continue
        fields = {k: v for k, v in spec_.items() if k not in ("name", "cancel_after", "model")}
        fields.update({k: Path(fields[k]) for k in ("image", "source") if k in fields})
        expected = alone[spec_.get("model", "cp")].render(RenderJob(**fields), _Quiet())
        got = np.load(out / f"{spec_['name']}.npy")
        assert got.shape == expected.shape == (9, spec_["height"], spec_["width"], 3)
        # Ulysses computes each head's attention over the whole sequence, as one process does: the
        # same float32 sums up to reordering, so the uint8 frames agree within one level
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1, spec_["name"]
        assert expected.std() > 1  # a real picture, not a constant
    assert np.array_equal(np.load(out / "t2v.npy"), np.load(out / "again.npy"))


def test_ranks_that_end_a_run_differently_stop_the_group(weights, tmp_path):
    """Rank 1 fails a run that rank 0 finished: neither can tell where the other stands, so the task
    fails, later runs are refused and both ranks exit 1 (torchrun then ends or restarts the group)."""
    base = {"prompt": "a kite", "width": 64, "height": 32, "n_frames": 9, "fps": 16}
    names = ("first", "split", "later")
    jobs = [{"name": name, "task_id": f"t{i}", "seed": i, **base} for i, name in enumerate(names, 1)]
    plan = {"data_dir": str(tmp_path / "data"), "model": "cp", "jobs": jobs, "follower_fails_after": "t2",
            "models": {"cp": _model(weights, context_parallel={"ulysses": 2}, warmup=False)}}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    out = tmp_path / "out"
    out.mkdir()
    run = _torchrun(str(HERE / "cp_ranks.py"), str(tmp_path / "plan.json"), str(out))
    log = _finish(run, 600)
    assert run.returncode != 0
    outcomes = json.loads((out / "outcomes.json").read_text())
    assert outcomes["preloaded"] is False  # warmup = false: loaded by the first run instead
    assert outcomes["first"]["status"] == "ok"
    assert outcomes["split"]["status"] == "failed" and outcomes["split"]["code"] == "context_parallel"
    assert "did not all finish this run alike" in outcomes["split"]["reason"]
    assert "rank 1: RuntimeError: rank 1 failed after the run" in outcomes["split"]["reason"]
    assert outcomes["later"]["status"] == "failed" and "stopped agreeing" in outcomes["later"]["reason"]
    assert "the ranks ended a run differently" in log, log[-3000:]


class _Quiet:
    def progress(self, fraction):
        pass

    def audio(self, track):
        pass

    def check_cancel(self):
        pass


def test_torchrun_sorakit_worker_claims_on_rank_0_and_renders_on_both(weights, tmp_path):
    """``torchrun --nproc-per-node 2 -m sorakit worker``: rank 0 claims and records the tasks, rank 1
    follows its runs; a context-parallel task's video equals a one-process model's of the same seed."""
    from conftest import Api

    from sorakit.media.encode import decode_frames

    data = tmp_path / "data"
    data.mkdir()
    models = {"cp": _model(weights, context_parallel={"ulysses": 2}), "one": _model(weights)}
    (data / "config.toml").write_text("workers = 0\n\n" + _toml(models))
    api = Api(data, 0, default_concurrency=10)
    run = None
    try:
        first = api.create(model="cp", seed=5, n_frames=18, orientation="landscape").json()["id"]
        second = api.create(model="one", seed=5, n_frames=18, orientation="landscape").json()["id"]
        env = {"PYTHONPATH": os.pathsep.join([str(HERE / "cp_site"), os.environ.get("PYTHONPATH", "")]),
               "SORAKIT_TEST_ONE_DEVICE": "1"}
        run = _torchrun("-m", "sorakit", "worker", "--data-dir", str(data), env=env)
        tasks = [api.wait(task_id, timeout=300) for task_id in (first, second)]
        for task in tasks:
            assert task["status"] == "succeeded", task["failure_reason"]
        videos = []
        for task in tasks:
            path = tmp_path / f"{task['id']}.mp4"
            path.write_bytes(api.client.get(task["generations"][0]["url"]).content)
            videos.append(np.stack(list(decode_frames(path))))
        assert videos[0].shape == videos[1].shape == (9, 32, 64, 3)
        assert np.abs(videos[0].astype(int) - videos[1].astype(int)).max() <= 2
        assert tasks[0]["generations"][0]["engine"]["speed"]["context_parallel"]["ulysses"] == 2
    finally:
        api.close()
        log = _finish(run, 60, stop=True) if run is not None else ""
    assert "context parallelism: rank 0 of 2 on cpu (gloo)" in log, log[-4000:]
    assert "rank 1: following rank 0's context-parallel jobs" in log, log[-4000:]


def _toml(models: dict) -> str:
    lines = []
    for name, table in models.items():
        lines.append(f"[models.{name}]")
        for key, value in table.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
