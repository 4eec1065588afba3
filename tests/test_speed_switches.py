"""Speed switches of ``[models.NAME]`` (compile, attention_backend, cache, vae_tiling/slicing) on the
tiny random-weight pipelines: each is applied (hooks registered, backend set, module compiled),
keeps the output's shape, is reported in the drafts' engine metadata, and a bad value is a clear
error: when the configuration loads when it can be told from the table alone, else when the
pipeline loads (never a silent no-op)."""

from __future__ import annotations

import numpy as np
import pytest

from sorakit.config import ConfigError
from sorakit.engines.models import parse_spec

TINY = {"dtype": "float32", "device": "cpu", "steps": 2, "resolution": {"small": [64, 32]}, "max_frames": 9}


# -- checked when the configuration loads (no torch needed) ------------------------------------------

@pytest.mark.parametrize("table,words", [
    ({"compile": "fast"}, ["models.m.compile must be one of", "'repeated_blocks'"]),
    ({"compile": 1}, ["models.m.compile must be one of"]),
    ({"compile_mode": "max-autotune"}, ["models.m.compile_mode is set but models.m.compile is \"off\""]),
    ({"compile": "full", "compile_mode": "turbo"}, ["models.m.compile_mode must be one of", "max-autotune"]),
    ({"attention_backend": "flash9"}, ["models.m.attention_backend must be one of", "native", "sage"]),
    ({"attention_backend": 3}, ["models.m.attention_backend must be one of"]),
    ({"cache": {"type": "teacache"}}, ["models.m.cache.type must be one of", "first_block, magcache, taylorseer, "
                                                                            "faster_cache, pab"]),
    ({"cache": {"threshold": 0.1}}, ["models.m.cache.type must be one of"]),
    ({"cache": {"type": "first_block", "thresh": 0.1}}, ["models.m.cache: unknown parameter(s) thresh",
                                                          "it takes threshold"]),
    ({"cache": {"type": "first_block", "threshold": -1}}, ["models.m.cache.threshold must be a number above 0"]),
    ({"cache": {"type": "first_block", "threshold": "high"}}, ["models.m.cache.threshold must be a number"]),
    ({"cache": {"type": "magcache"}}, ["models.m.cache.mag_ratios is required for magcache", "calibrate"]),
    ({"cache": {"type": "magcache", "mag_ratios": [1, "x"]}}, ["models.m.cache.mag_ratios must be a list of numbers"]),
    ({"cache": {"type": "pab", "spatial_attention_timestep_skip_range": [800, 100]}},
     ["models.m.cache.spatial_attention_timestep_skip_range must be two increasing timesteps"]),
    ({"cache": {"type": "pab", "cross_attention_block_skip_range": 0}},
     ["models.m.cache.cross_attention_block_skip_range must be a whole number of at least 1"]),
    ({"cache": {"type": "taylorseer", "taylor_factors_dtype": "int8"}},
     ["models.m.cache.taylor_factors_dtype must be one of float32, float16, bfloat16"]),
    ({"cache": {"type": "taylorseer", "cache_identifiers": ["blocks.(0"]}},
     ["models.m.cache.cache_identifiers: 'blocks.(0' is not a regular expression"]),
    ({"cache": {"type": "faster_cache", "attention_weight": -0.5}},
     ["models.m.cache.attention_weight must be a number of at least 0"]),
    ({"cache": 5}, ["models.m.cache must be a table"]),
    ({"cfg": "batched"}, ["models.m.cfg: no pipeline in diffusers 0.42.1 has a switch for batching "
                          "classifier-free guidance"]),
    ({"vae_tiling": "yes"}, ["models.m.vae_tiling must be true or false, not 'yes'"]),
    ({"vae_slicing": 1}, ["models.m.vae_slicing must be true or false"]),
    ({"warmup": "no"}, ["models.m.warmup must be true or false"]),
    ({"steps": 0}, ["models.m.steps must be a whole number of at least 1"]),
    ({"steps": "50"}, ["models.m.steps must be a whole number"]),
    ({"guidance": -1}, ["models.m.guidance must be a number of at least 0"]),
    ({"fps": 2.5}, ["models.m.fps must be a whole number"]),
    ({"device": "gpu"}, ["models.m.device must be cpu, cuda, cuda:N"]),
    ({"resolution": {"small": [64, "32"]}}, ["models.m.resolution.small must be two whole numbers"]),
    ({"speed": "max"}, ["models.m: unknown key(s) models.m.speed"]),
])
def test_bad_switch_values_are_config_errors_naming_the_key(table, words):
    with pytest.raises(ConfigError) as caught:
        parse_spec("m", {"family": "wan", "path": "x", **table})
    for word in words:
        assert word in str(caught.value), str(caught.value)


def test_compile_keeps_its_old_boolean_spelling():
    assert parse_spec("m", {"family": "wan", "path": "x", "compile": True}).compile == "full"
    assert parse_spec("m", {"family": "wan", "path": "x", "compile": False}).compile == "off"
    assert parse_spec("m", {"family": "wan", "path": "x"}).compile == "off"


def test_a_good_table_parses_and_describes_every_parameter_it_applies():
    from sorakit.engines import speed

    spec = parse_spec("m", {"family": "wan", "path": "x", "compile": "repeated_blocks",
                            "compile_mode": "max-autotune-no-cudagraphs", "attention_backend": "sage",
                            "cache": {"type": "magcache", "mag_ratios": [1.0, 0.99, 0.98], "threshold": 0.1},
                            "vae_tiling": True})
    info = speed.describe(spec)
    assert info["compile"] == "repeated_blocks" and info["compile_mode"] == "max-autotune-no-cudagraphs"
    assert info["attention_backend"] == "sage" and info["vae_tiling"] is True and info["vae_slicing"] is False
    assert info["cache"] == {"type": "magcache", "threshold": 0.1, "max_skip_steps": 3, "retention_ratio": 0.2,
                             "num_inference_steps": 50, "mag_ratios": "3 values", "calibrate": False}
    assert speed.describe(parse_spec("m", {"family": "wan", "path": "x"})) == {
        "compile": "off", "attention_backend": None, "cache": None, "vae_tiling": False, "vae_slicing": False}
    pab = speed.cache_parameters(parse_spec("m", {"family": "ltx", "path": "x", "cache": {"type": "pab"}}))
    assert pab["spatial_attention_block_skip_range"] == 2 and pab["cross_attention_timestep_skip_range"] == [100, 800]


# -- applied when the pipeline loads ---------------------------------------------------------------

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from tiny_pipelines import save_pipeline  # noqa: E402

from sorakit.engines import Cancelled, EngineError, RenderJob  # noqa: E402
from sorakit.engines import speed  # noqa: E402
from sorakit.engines.diffusers_engine import DiffusersEngine  # noqa: E402


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    return {family: save_pipeline(family, root / family) for family in ("wan", "ltx", "cogvideox")}


def make(weights, tmp_path, family, **switches) -> DiffusersEngine:
    table = {"family": family, "path": str(weights[family]), **TINY, **switches}
    return DiffusersEngine(parse_spec(f"tiny-{family}", table), tmp_path)


class Ctx:
    def __init__(self, cancel_at: int | None = None) -> None:
        self.calls, self.cancel_at = 0, cancel_at

    def progress(self, fraction):
        pass

    def check_cancel(self):
        self.calls += 1
        if self.cancel_at is not None and self.calls >= self.cancel_at:
            raise Cancelled()

    def audio(self, track):
        pass


def render(engine, seed=3, steps=None, ctx=None):
    plan = engine.plan("landscape", "small", 30)
    params = {"num_inference_steps": steps} if steps else {}
    job = RenderJob("t", "a red kite over the sea", plan.width, plan.height, plan.n_frames, plan.fps, seed=seed,
                    params=params)
    return engine.render(job, ctx or Ctx())


def test_attention_backend_is_set_on_every_processor_and_does_not_leak(weights, tmp_path):
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    default = _AttentionBackendRegistry._active_backend
    plain = make(weights, tmp_path, "wan")
    switched = make(weights, tmp_path, "wan", attention_backend="_native_flash")
    pipe = switched.pipeline()
    assert speed.attention_backends(pipe.transformer) == {"_native_flash"}  # read back from the processors
    assert speed.attention_backends(plain.pipeline().transformer) == {None}  # the other model: untouched
    assert _AttentionBackendRegistry._active_backend == default  # the process-wide default too
    a, b = render(plain), render(switched)
    assert a.shape == b.shape == (9, 32, 64, 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # the same attention, another kernel
    assert switched.describe("generate")["speed"]["attention_backend"] == "_native_flash"
    assert switched._speed_applied["warmup_s"] > 0  # a switch that changes the denoiser is warmed up at load


@pytest.mark.parametrize("family,cache,hook", [
    ("wan", {"type": "first_block", "threshold": 0.2}, "fbc_leader_block_hook"),
    ("ltx", {"type": "magcache", "mag_ratios": [1.0, 1.0, 0.98, 0.95], "num_inference_steps": 2},
     "mag_cache_leader_block_hook"),
    ("wan", {"type": "taylorseer", "cache_interval": 2, "disable_cache_before_step": 1}, "taylorseer_cache"),
    ("cogvideox", {"type": "faster_cache"}, "faster_cache_denoiser"),
    ("ltx", {"type": "pab", "spatial_attention_block_skip_range": 2}, "pyramid_attention_broadcast"),
])
def test_each_cache_registers_its_hooks_and_keeps_the_shape(weights, tmp_path, family, cache, hook):
    engine = make(weights, tmp_path, family, cache=cache)
    transformer = engine.pipeline().transformer
    hooks = speed.cache_hooks(transformer)
    assert transformer.is_cache_enabled and hook in {name for _, name in hooks}, hooks
    if cache["type"] == "taylorseer":  # sorakit's default patterns: every block's attention modules
        assert {m for m, _ in hooks} == {f"blocks.{i}.attn{j}" for i in (0, 1) for j in (1, 2)}
    assert render(engine, steps=4).shape == (9, 32, 64, 3)
    reported = engine.describe("generate")["speed"]["cache"]
    assert reported["type"] == cache["type"] and all(reported[k] == v for k, v in cache.items() if k != "mag_ratios")


NEW = {"ltx2": "LTX2VideoTransformerBlock", "hunyuanvideo15": "HunyuanVideo15TransformerBlock", "wan22-ti2v": None}


@pytest.mark.parametrize("family", sorted(NEW))
def test_the_newer_families_take_the_caches_diffusers_can_hook(tmp_path, family):
    import tiny_pipelines

    if family not in getattr(tiny_pipelines, "ALL_FAMILIES", ()):
        pytest.skip(f"no tiny {family} pipeline")
    path = save_pipeline(family, tmp_path / family)
    table = {"family": family, "path": str(path), **TINY, "resolution": {"small": [96, 64]}}

    def engine(**switches):
        return DiffusersEngine(parse_spec(f"tiny-{family}", {**table, **switches}), tmp_path)

    pab = engine(cache={"type": "pab"})
    assert speed.cache_hooks(pab.pipeline().transformer)
    assert render(pab).shape == (9, 64, 96, 3)
    first_block = engine(cache={"type": "first_block"})
    if NEW[family] is None:  # Wan's blocks: diffusers knows them
        assert speed.cache_hooks(first_block.pipeline().transformer)
        return
    with pytest.raises(ConfigError, match=rf"models\.tiny-{family}\.cache: first_block hooks .* does not know the "
                                          rf"block class {NEW[family]}"):
        first_block.pipeline()


def test_vae_tiling_and_slicing_are_switched_on(weights, tmp_path):
    engine = make(weights, tmp_path, "ltx", vae_tiling=True, vae_slicing=True)
    vae = engine.pipeline().vae
    assert vae.use_tiling and vae.use_slicing
    assert "warmup_s" not in engine._speed_applied  # nothing in the denoiser changed: no warm-up
    assert render(engine).shape == (9, 32, 64, 3)
    info = engine.describe()["speed"]
    assert info["vae_tiling"] is True and info["vae_slicing"] is True


def test_an_aborted_run_leaves_no_cache_state_behind(weights, tmp_path):
    """The cache hooks reset their state at the end of a run; a cancelled run never gets there. The
    render path's ``maybe_free_model_hooks()`` (in its ``finally``) resets it: in diffusers 0.42.1 it
    calls ``_reset_stateful_cache()`` on every component that has one (the transformer)."""
    cache = {"type": "first_block", "threshold": 0.5}
    engine = make(weights, tmp_path, "wan", cache=cache)
    with pytest.raises(Cancelled):
        render(engine, steps=6, ctx=Ctx(cancel_at=4))  # stopped inside the denoising loop
    managers = [hook.state_manager for block in engine.pipeline().transformer.blocks
                for hook in block._diffusers_hook.hooks.values() if hasattr(hook, "state_manager")]
    assert managers and all(m._state_cache == {} and m._context is None for m in managers)
    assert np.array_equal(render(engine, steps=6), render(make(weights, tmp_path, "wan", cache=cache), steps=6))


def test_switches_that_cannot_apply_fail_at_load_naming_the_key(weights, tmp_path, monkeypatch):
    cases = [
        (make(weights, tmp_path, "cogvideox", compile="repeated_blocks"),
         ["models.tiny-cogvideox.compile", "CogVideoXTransformer3DModel", "_repeated_blocks", "compile = \"full\""]),
        (make(weights, tmp_path, "cogvideox", attention_backend="native"),
         ["models.tiny-cogvideox.attention_backend", "CogVideoXAttnProcessor2_0",
          "do not go through diffusers' attention dispatcher"]),
        (make(weights, tmp_path, "wan", attention_backend="sage"),
         ["models.tiny-wan.attention_backend", "'sage' runs only on a CUDA GPU", "'cpu'"]),
        (make(weights, tmp_path, "wan", cache={"type": "faster_cache"}),
         ["models.tiny-wan.cache: faster_cache does not work with WanTransformer3DModel"]),
        (make(weights, tmp_path, "ltx", cache={"type": "taylorseer", "cache_identifiers": ["nothing_here"]}),
         ["models.tiny-ltx.cache: taylorseer registered no hook on any module of LTXVideoTransformer3DModel"]),
    ]
    for engine, words in cases:
        with pytest.raises(ConfigError) as caught:
            engine.pipeline()
        assert isinstance(caught.value, EngineError) and caught.value.code == "speed_switch"  # fails a task cleanly
        for word in words:
            assert word in str(caught.value), str(caught.value)
    # A switch that only fails when it runs fails in the warm-up, at load, not in a user's task.
    monkeypatch.setitem(speed.FASTER_CACHE_FORMATS, "LTXVideoTransformer3DModel", "BCFHW")
    with pytest.raises(ConfigError, match=r"models\.tiny-ltx: the warm-up run with cache = .*faster_cache.* failed "
                                          r"at 64x32, 9 frames"):
        make(weights, tmp_path, "ltx", cache={"type": "faster_cache"}).pipeline()


def test_a_missing_attention_kernel_is_refused_with_diffusers_reason(weights, tmp_path):
    pytest.importorskip("diffusers")
    from diffusers.models import attention_dispatch

    if attention_dispatch._CAN_USE_SAGE_ATTN:
        pytest.skip("sageattention is installed here")
    spec = parse_spec("gpu-model", {"family": "wan", "path": "x", "device": "cuda", "attention_backend": "sage"})
    from tiny_pipelines import build_pipeline

    with pytest.raises(speed.SpeedSwitchError, match=r"models\.gpu-model\.attention_backend: 'sage' cannot be used "
                                                     r"here: .*sageattention"):
        speed._attention_backend(spec, build_pipeline("wan").transformer, "transformer")


def test_drafts_record_the_switches_and_a_bad_one_fails_its_task(weights, tmp_path_factory):
    from conftest import Api

    models = {
        "fast-wan": {"family": "wan", "path": str(weights["wan"]), **TINY, "attention_backend": "_native_math",
                     "cache": {"type": "first_block", "threshold": 0.1}, "vae_tiling": True},
        "broken": {"family": "cogvideox", "path": str(weights["cogvideox"]), **TINY, "compile": "repeated_blocks"},
    }
    api = Api(tmp_path_factory.mktemp("data"), 1, models=models, default_concurrency=10)
    try:
        task = api.wait(api.create(model="fast-wan", n_frames=30, orientation="landscape").json()["id"], timeout=120)
        assert task["status"] == "succeeded", task["failure_reason"]
        assert (task["width"], task["height"], task["n_frames"]) == (64, 32, 9)
        engine = task["generations"][0]["engine"]
        assert engine["speed"] == {"compile": "off", "attention_backend": "_native_math",
                                   "cache": {"type": "first_block", "threshold": 0.1},
                                   "vae_tiling": True, "vae_slicing": False}
        failed = api.wait(api.create(model="broken", n_frames=30).json()["id"], timeout=120)
        assert failed["status"] == "failed"
        assert "models.broken.compile" in failed["failure_reason"]
        assert "CogVideoXTransformer3DModel" in failed["failure_reason"]
    finally:
        api.close()


# -- compiled once at load (torch.compile on the CPU takes 20-60 s per model) ------------------------

@pytest.mark.slow
def test_compile_repeated_blocks_compiles_each_block_once_at_load(weights, tmp_path):
    engine = make(weights, tmp_path, "wan", compile="repeated_blocks")
    transformer = engine.pipeline().transformer
    assert speed.compiled_modules(transformer) == ["blocks.0", "blocks.1"]  # the regions, not the whole model
    assert engine._speed_applied["warmup_s"] > 0
    import time

    started = time.perf_counter()
    frames = render(engine)  # the warm-up's shape: already compiled
    assert frames.shape == (9, 32, 64, 3)
    assert time.perf_counter() - started < max(5.0, engine._speed_applied["warmup_s"] / 3)
    assert engine.describe()["speed"]["compile"] == "repeated_blocks"


@pytest.mark.slow
def test_compile_full_and_its_old_spelling(weights, tmp_path):
    engine = make(weights, tmp_path, "ltx", compile=True)  # the old boolean: "full"
    transformer = engine.pipeline().transformer
    assert speed.compiled_modules(transformer) == [""]  # the whole module, in place (same class, same hooks)
    assert type(transformer).__name__ == "LTXVideoTransformer3DModel"
    assert render(engine).shape == (9, 32, 64, 3)
    assert engine.describe()["speed"]["compile"] == "full"


@pytest.mark.slow
def test_the_gpu_benchmark_runs_at_toy_size_on_the_cpu(tmp_path):
    """benchmarks/gpu_wan_step.py --tiny: the same code path as on a GPU, with a toy pipeline."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_wan_step.py"
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(script), "--device", "cpu", "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "x stock" in done.stdout and "PSNR" in done.stdout
    rows = json.loads(out.read_text())["variants"]
    assert rows["off"]["psnr_db"] == float("inf") and rows["off"]["ssim"] == 1.0  # sorakit off == reference
    assert rows["stock"]["frames_shape"] == rows["off"]["frames_shape"] == [9, 64, 64, 3]
    for name in ("cache=first_block", "cache=taylorseer", "cache=pab", "cache=magcache", "attention=_native_flash"):
        assert rows[name]["e2e_s"] > 0 and 0 < rows[name]["ssim"] <= 1.0, (name, rows[name])
    assert "faster_cache does not work with WanTransformer3DModel" in rows["cache=faster_cache"]["error"]


def test_models_with_switches_load_and_warm_up_when_the_worker_starts(weights, tmp_path_factory):
    """The warm-up happens before the first request, in the worker's own thread; models without
    switches wait for their first use (each worker would otherwise hold every model)."""
    import time

    from conftest import Api

    models = {"fast": {"family": "wan", "path": str(weights["wan"]), **TINY, "attention_backend": "_native_math"},
              "plain": {"family": "ltx", "path": str(weights["ltx"]), **TINY}}
    api = Api(tmp_path_factory.mktemp("data"), 1, models=models, default_concurrency=10)
    try:
        fast, plain = api.services.engines["fast"], api.services.engines["plain"]
        deadline = time.monotonic() + 60
        while getattr(fast, "_speed_applied", None) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fast._speed_applied is not None and "warmup_s" in fast._speed_applied
        assert getattr(plain, "_speed_applied", None) is None  # not loaded before a task asks for it
    finally:
        api.close()
