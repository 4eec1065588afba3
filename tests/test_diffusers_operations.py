"""Remix (video to video) and extend through ``DiffusersEngine.frames`` on tiny random-weight
pipelines of every family, with a real MP4 source of solid, distinct colours.

The pipelines are observed, never replaced: a spy wraps the class's ``__call__``, records the
pipeline and its keyword arguments and calls through to the real one."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from tiny_pipelines import (  # noqa: E402
    COLOURS,
    PIPELINE_CLASS_NAMES,
    V2V_CLASS_NAMES,
    build_pipeline,
    build_v2v,
    nearest_colour,
    save_pipeline,
    write_colour_video,
)

from sorakit.engines import RenderJob  # noqa: E402
from sorakit.engines.base import Cancelled, EngineError  # noqa: E402
from sorakit.engines.diffusers_engine import DENOISE_SHARE, DiffusersEngine, sample_indices  # noqa: E402
from sorakit.engines.families import FAMILIES  # noqa: E402
from sorakit.engines.models import parse_spec  # noqa: E402

pytestmark = [
    pytest.mark.diffusers,
    # LTXConditionPipeline hands the scheduler a tensor that it turns into numpy (diffusers 0.42.1)
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]
TINY = {"dtype": "float32", "device": "cpu", "steps": 2, "resolution": {"small": [64, 32]}, "max_frames": 9}
SOURCE_FPS = 16  # the source: 16 frames, one colour each, 96x64 (another size than the jobs' 64x32)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    found = {}
    for family in ("wan", "ltx", "cogvideox"):
        found[family] = save_pipeline(family, root / family)
        if not FAMILIES[family].i2v_shares_weights:
            found[family + "-i2v"] = save_pipeline(family, root / f"{family}-i2v", i2v=True)
    return found


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("source")
    video = write_colour_video(root / "source.mp4", COLOURS, width=96, height=64, fps=SOURCE_FPS)
    last = root / "last.png"  # what the worker hands an extension: the source's last frame
    Image.new("RGB", (96, 64), COLOURS[-1]).save(last)
    return video, last


def make_engine(family, weights, tmp_path, *, i2v=True, **overrides):
    table = {"family": family, "path": str(weights[family]), **TINY, **overrides}
    if i2v and family + "-i2v" in weights:
        table["image_path"] = str(weights[family + "-i2v"])
    return DiffusersEngine(parse_spec(f"tiny-{family}", table), tmp_path)


class Ctx:
    def __init__(self, cancel_after=None):
        self.seen, self.cancel_after = [], cancel_after

    def progress(self, fraction):
        self.seen.append(fraction)

    def check_cancel(self):
        if self.cancel_after is not None and len(self.seen) >= self.cancel_after:
            raise Cancelled()


@contextlib.contextmanager
def spy(monkeypatch, class_name):
    """Record every call of the pipeline class ``class_name`` (and its output); call through."""
    cls = getattr(diffusers, class_name)
    original, calls = cls.__call__, []

    def observed(self, *args, **kwargs):
        call = {"pipe": self, "kwargs": kwargs}
        calls.append(call)
        call["output"] = original(self, *args, **kwargs)
        return call["output"]

    monkeypatch.setattr(cls, "__call__", observed)
    yield calls
    monkeypatch.setattr(cls, "__call__", original)


def job_for(engine, operation, source, **fields):
    plan = engine.plan("landscape", "small", 30)
    video, last = source
    extra = {"source": video, **({"image": last} if operation == "extend" else {})}
    return RenderJob("task_x", "a red kite over a grey sea", plan.width, plan.height, plan.n_frames, plan.fps,
                     seed=3, operation=operation, **{**extra, **fields})


def to_uint8(frames):
    return (np.clip(np.asarray(frames, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)


# -- what each model offers ---------------------------------------------------------------------

def test_operations_per_family_and_config(tmp_path):
    def engine(family, image_path=None):
        table = {"family": family, "path": "x", **({"image_path": image_path} if image_path else {})}
        return DiffusersEngine(parse_spec("m", table), tmp_path)

    everything = {"generate", "image", "remix", "extend"}
    assert engine("wan", "y").operations() == everything
    assert engine("cogvideox", "y").operations() == everything
    assert engine("ltx").operations() == everything  # one set of weights does all four
    for family in ("wan", "cogvideox"):
        t2v_only = engine(family)
        assert t2v_only.operations() == {"generate", "remix"}  # remix runs on the t2v weights
        assert t2v_only.unsupported("remix") is None
        message = t2v_only.unsupported("extend")
        assert "extension" in message and "image_path" in message and FAMILIES[family].i2v_class in message
        assert "image-to-video" in t2v_only.unsupported("image")
    described = engine("wan").describe("remix")
    assert described["pipeline"] == "WanVideoToVideoPipeline"
    assert described["pipelines"] == {"generate": "WanPipeline", "remix": "WanVideoToVideoPipeline"}
    assert engine("ltx").describe()["pipelines"] == {
        "generate": "LTXPipeline", "image": "LTXImageToVideoPipeline", "remix": "LTXConditionPipeline",
        "extend": "LTXConditionPipeline"}
    for family, name in V2V_CLASS_NAMES.items():
        assert FAMILIES[family].v2v_class == name and hasattr(diffusers, name)


def test_an_unsupported_operation_fails_before_loading(weights, source, tmp_path):
    engine = make_engine("wan", weights, tmp_path, i2v=False)
    with pytest.raises(EngineError) as caught:
        list(engine.frames(job_for(engine, "extend", source), Ctx()))
    assert caught.value.code == "unsupported_operation" and "extension" in caught.value.reason
    assert not engine._local.__dict__  # nothing was loaded


def test_sample_indices_follow_time_and_spread_a_short_source():
    assert sample_indices(16, 16, 9, 16) == list(range(9))  # same rate: the first frames
    assert sample_indices(16, 16, 9, 24) == [0, 1, 1, 2, 3, 3, 4, 5, 5]  # 24 fps from 16 fps
    assert sample_indices(160, 30, 5, 15) == [0, 2, 4, 6, 8]
    assert sample_indices(16, 16, 9, 8) == [round(i * 15 / 8) for i in range(9)]  # too short: spread
    assert sample_indices(16, 16, 9, 16, tail=True) == list(range(7, 16))  # ends on the last frame
    assert sample_indices(16, 16, 9, 24, tail=True)[-1] == 15
    assert sample_indices(1, 30, 4, 30) == [0, 0, 0, 0]


def test_frame_counts_for_remix_and_extend():
    wan, ltx, cog = FAMILIES["wan"], FAMILIES["ltx"], FAMILIES["cogvideox"]
    assert [wan.clean_frames(n) for n in (9, 10, 13)] == [9, 13, 13]
    assert [cog.clean_frames(n) for n in (9, 10, 13, 17)] == [9, 17, 17, 17]  # 8k+1: odd latent counts
    assert [ltx.clean_frames(n) for n in (9, 10, 17)] == [9, 17, 17]
    assert wan.extend_frames(9) == (13, 1) and cog.extend_frames(9) == (17, 1)  # one more: the image
    assert ltx.extend_frames(9) == (25, 9) and ltx.extend_frames(8) == (17, 9)  # the 9-frame context


# -- remix --------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["wan", "ltx", "cogvideox"])
def test_remix_runs_the_v2v_pipeline_on_the_source(family, weights, source, tmp_path, monkeypatch):
    engine = make_engine(family, weights, tmp_path, i2v=False)
    job = job_for(engine, "remix", source)
    f = FAMILIES[family]
    ctx = Ctx()
    with spy(monkeypatch, f.v2v_class) as calls:
        frames = list(engine.frames(job, ctx))

    assert len(calls) == 1
    pipe, kwargs = calls[0]["pipe"], calls[0]["kwargs"]
    assert type(pipe).__name__ == f.v2v_class and pipe is engine.pipeline(kind="v2v")
    t2v = engine.pipeline(kind="t2v")
    assert type(t2v).__name__ == f.t2v_class
    assert pipe.transformer is t2v.transformer and pipe.vae is t2v.vae  # the same weights, not a copy
    assert set(engine._local.__dict__) == {"t2v", "v2v"}

    rendered = f.clean_frames(job.n_frames)  # 9: on every family's rule (8k+1 for cogvideox)
    if f.remix_style == "conditions":  # LTX: the source conditions the render, 1 - strength
        (condition,) = kwargs["conditions"]
        video, strength = condition.video, 1 - condition.strength
        assert condition.frame_index == 0 and kwargs["num_frames"] == rendered
        assert kwargs["frame_rate"] == job.fps
    else:  # SDEdit: video= and strength=; the output has the video's length
        video, strength = kwargs["video"], kwargs["strength"]
        assert "num_frames" not in kwargs
    assert strength == pytest.approx(0.7)  # the default
    assert len(video) == rendered and all(frame.size == (job.width, job.height) for frame in video)
    expected = sample_indices(len(COLOURS), SOURCE_FPS, rendered, job.fps)
    assert [nearest_colour(frame) for frame in video] == expected

    assert len(frames) == job.n_frames
    assert all(frame.shape == (job.height, job.width, 3) and frame.dtype == np.uint8 for frame in frames)
    np.testing.assert_array_equal(np.stack(frames), to_uint8(calls[0]["output"].frames[0][:job.n_frames]))
    # progress counts the steps really run: wan/cogvideox run int(2 * 0.7) = 1, ltx all 2
    steps = 2 if f.remix_style == "conditions" else 1
    assert ctx.seen == pytest.approx([DENOISE_SHARE * (i + 1) / steps for i in range(steps)] + [1.0])


@pytest.mark.parametrize(("strength", "steps_run"), [(1.0, 3), (0.5, 1), (0.0, 1)])
def test_remix_strength_sets_the_steps_run(strength, steps_run, weights, source, tmp_path, monkeypatch):
    engine = make_engine("wan", weights, tmp_path, i2v=False, steps=3)
    ctx = Ctx()
    with spy(monkeypatch, "WanVideoToVideoPipeline") as calls:
        frames = list(engine.frames(job_for(engine, "remix", source, strength=strength), ctx))
    assert len(frames) == 9
    given = calls[0]["kwargs"]["strength"]
    assert given == strength if strength else int(3 * given) == 1  # 0 still runs one step
    assert len(ctx.seen) == steps_run + 1 and ctx.seen[-2] == pytest.approx(DENOISE_SHARE)


def test_ltx_remix_strength_is_how_loosely_the_source_conditions(weights, source, tmp_path, monkeypatch):
    engine = make_engine("ltx", weights, tmp_path)
    with spy(monkeypatch, "LTXConditionPipeline") as calls:
        list(engine.frames(job_for(engine, "remix", source, strength=0.25), Ctx()))
    assert calls[0]["kwargs"]["conditions"][0].strength == pytest.approx(0.75)
    # LTXConditionPipeline passes no ``mu``: its scheduler copy does not shift dynamically
    assert engine.pipeline(kind="t2v").scheduler.config.use_dynamic_shifting is True
    assert engine.pipeline(kind="v2v").scheduler.config.use_dynamic_shifting is False


# -- extend -------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["wan", "ltx", "cogvideox"])
def test_extend_yields_only_frames_after_the_last_one(family, weights, source, tmp_path, monkeypatch):
    engine = make_engine(family, weights, tmp_path)
    job = job_for(engine, "extend", source)
    f = FAMILIES[family]
    expected_class = f.v2v_class if f.extend_via == "v2v" else f.i2v_class
    ctx = Ctx()
    with spy(monkeypatch, expected_class) as calls:
        frames = list(engine.frames(job, ctx))

    assert len(calls) == 1
    pipe, kwargs = calls[0]["pipe"], calls[0]["kwargs"]
    assert type(pipe).__name__ == expected_class
    rendered, skip = f.extend_frames(job.n_frames)
    assert kwargs["num_frames"] == rendered
    if f.extend_via == "i2v":  # from the last frame: the pipeline gives it back as frame 0
        assert skip == 1 and rendered == {"wan": 13, "cogvideox": 17}[family]  # 9 + 1 up to 4k+1 / 8k+1
        assert kwargs["image"].size == (job.width, job.height)
        assert nearest_colour(kwargs["image"]) == len(COLOURS) - 1
        assert pipe is engine.pipeline(kind="i2v")
    else:  # LTX: conditioned on the source's last frames, which come back first
        (condition,) = kwargs["conditions"]
        assert condition.frame_index == 0 and condition.strength == 1.0
        assert skip == len(condition.video) == f.extend_context == 9
        tail = sample_indices(len(COLOURS), SOURCE_FPS, skip, job.fps, tail=True)
        assert [nearest_colour(frame) for frame in condition.video] == tail
        assert tail[-1] == len(COLOURS) - 1  # ends on the source's last frame
        assert pipe is engine.pipeline(kind="v2v")

    output = np.asarray(calls[0]["output"].frames[0])
    assert len(output) >= skip + job.n_frames
    assert len(frames) == job.n_frames
    assert all(frame.shape == (job.height, job.width, 3) and frame.dtype == np.uint8 for frame in frames)
    np.testing.assert_array_equal(np.stack(frames), to_uint8(output[skip:skip + job.n_frames]))
    assert not np.array_equal(frames[0], to_uint8(output[skip - 1]))  # not the conditioning frame
    assert ctx.seen[-2] == pytest.approx(DENOISE_SHARE) and ctx.seen[-1] == 1.0


def test_extend_of_an_exact_plan_is_exact(weights, source, tmp_path):
    engine = make_engine("ltx", weights, tmp_path, fps=3, max_frames=17)
    plan = engine.plan_exact(64, 32, 4)  # 12 frames at 3 fps: off the 8k+1 rule
    job = RenderJob("task_x", "a kite", plan.width, plan.height, plan.n_frames, plan.fps, seed=1,
                    operation="extend", source=source[0], image=source[1])
    assert engine.call_arguments(job)["num_frames"] == 25  # 9 conditioning + 12, up to 8k+1
    assert len(list(engine.frames(job, Ctx()))) == 12


# -- cancellation and the pipelines themselves --------------------------------------------------

@pytest.mark.parametrize(("family", "operation"), [("ltx", "remix"), ("wan", "remix"), ("wan", "extend")])
def test_cancel_stops_the_run_mid_denoise(family, operation, weights, source, tmp_path, monkeypatch):
    engine = make_engine(family, weights, tmp_path, steps=4)
    job = job_for(engine, operation, source, **({"strength": 1.0} if operation == "remix" else {}))
    ctx = Ctx(cancel_after=1)  # cancelled once the first step reported its progress
    kind = engine._kind(operation)
    name = {"v2v": FAMILIES[family].v2v_class, "i2v": FAMILIES[family].i2v_class}[kind]
    with spy(monkeypatch, name) as calls:
        with pytest.raises(Cancelled):
            list(engine.frames(job, ctx))
    assert len(calls) == 1 and "output" not in calls[0]  # stopped inside the pipeline
    assert ctx.seen == [pytest.approx(DENOISE_SHARE / 4)]
    assert len(list(engine.frames(job, Ctx()))) == job.n_frames  # and the pipeline is still usable


def test_derived_pipelines_share_modules_without_recasting(weights):
    """``from_pipe`` would ``.to(dtype)`` the shared modules (float32 by default); building from
    components leaves the resident t2v pipeline exactly as ``from_pretrained`` made it."""
    t2v = diffusers.WanPipeline.from_pretrained(weights["wan"], dtype=torch.bfloat16)
    kept = t2v.transformer.condition_embedder.time_embedder.linear_1.weight  # kept in float32
    assert (t2v.transformer.proj_out.weight.dtype, kept.dtype) == (torch.bfloat16, torch.float32)
    v2v = build_v2v(t2v)
    assert type(v2v).__name__ == "WanVideoToVideoPipeline" and v2v.transformer is t2v.transformer
    assert (t2v.transformer.proj_out.weight.dtype, kept.dtype) == (torch.bfloat16, torch.float32)


@pytest.mark.parametrize("family", ["wan", "ltx", "cogvideox"])
def test_tiny_v2v_pipelines_run_on_t2v_weights(family):
    base = build_pipeline(family)
    assert type(base).__name__ == PIPELINE_CLASS_NAMES[(family, False)]
    pipe = build_v2v(base)
    video = [Image.new("RGB", (64, 32), colour) for colour in COLOURS[:9]]
    common = dict(prompt="a cat", height=32, width=64, num_inference_steps=2, output_type="np",
                  generator=torch.Generator().manual_seed(0))
    if family == "ltx":
        from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition

        out = pipe(conditions=[LTXVideoCondition(video=video, frame_index=0, strength=0.5)], num_frames=9, **common)
    else:
        out = pipe(video=video, strength=1.0, **common)
    assert np.asarray(out.frames).shape[:2] == (1, 9)
