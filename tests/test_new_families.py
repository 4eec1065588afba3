"""The newer families on tiny random-weight pipelines of their real architectures (built in code,
saved with ``save_pretrained``): LTX-2 (video with sound, image to video, two-stage upsampling),
HunyuanVideo 1.5 and Wan 2.2 TI2V, through the app where it matters and the engine elsewhere."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from conftest import assert_error
from PIL import Image

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from tiny_pipelines import (  # noqa: E402
    COLOURS,
    NEW_FAMILIES,
    save_ltx2_upsampler,
    save_pipeline,
    write_colour_video,
)

from sorakit.engines import Cancelled, PlanRefused, RenderJob  # noqa: E402
from sorakit.engines.diffusers_engine import DiffusersEngine  # noqa: E402
from sorakit.engines.families import FAMILIES  # noqa: E402
from sorakit.engines.models import ModelSpec, parse_spec  # noqa: E402
from sorakit.media.encode import probe  # noqa: E402

pytestmark = pytest.mark.diffusers
#: 96x64: LTX-2's decoder needs two latent rows (64 px); every family's multiple divides it
TINY = {"dtype": "float32", "device": "cpu", "steps": 2, "resolution": {"small": [96, 64]}, "max_frames": 9}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    root = tmp_path_factory.mktemp("weights")
    found = {family: save_pipeline(family, root / family) for family in NEW_FAMILIES}
    found["hunyuanvideo15-i2v"] = save_pipeline("hunyuanvideo15", root / "hunyuanvideo15-i2v", i2v=True)
    found["ltx2-upsampler"] = save_ltx2_upsampler(root / "ltx2-upsampler")
    return found


def models_config(weights) -> dict:
    config = {f"tiny-{family}": {"family": family, "path": str(weights[family]), **TINY} for family in NEW_FAMILIES}
    config["tiny-hunyuanvideo15"]["image_path"] = str(weights["hunyuanvideo15-i2v"])
    return config


@pytest.fixture(scope="module")
def server(weights, tmp_path_factory):
    from conftest import Api

    api = Api(tmp_path_factory.mktemp("data"), 1, models=models_config(weights), default_concurrency=10)
    yield api
    api.close()


def engine(weights, family: str, **table) -> DiffusersEngine:
    config = {**models_config(weights)[f"tiny-{family}"], **table}
    return DiffusersEngine(parse_spec(f"tiny-{family}", config), weights[family].parent)


class Ctx:
    def __init__(self, stop_after: int | None = None) -> None:
        self.fractions, self.tracks, self.stop_after = [], [], stop_after

    def progress(self, fraction):
        self.fractions.append(fraction)

    def check_cancel(self):
        if self.stop_after is not None and len(self.fractions) >= self.stop_after:
            raise Cancelled()

    def audio(self, track):
        self.tracks.append(track)


def job(**fields) -> RenderJob:
    base = dict(task_id="task_x", prompt="a red kite over a grey sea", width=96, height=64, n_frames=10, fps=24, seed=3)
    return RenderJob(**{**base, **fields})


def png(tmp_path, colour=(220, 120, 20), size=(96, 64)):
    path = tmp_path / "start.png"
    Image.new("RGB", size, colour).save(path)
    return path


def _video(api, task, tmp_path):
    path = tmp_path / f"{task['id']}.mp4"
    path.write_bytes(api.client.get(task["generations"][0]["url"]).content)
    return path


# -- through the app ----------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["hunyuanvideo15", "wan22-ti2v"])
def test_a_task_gives_the_familys_size_frames_and_rate(server, family, tmp_path):
    r = server.create(model=f"tiny-{family}", n_frames=30, orientation="landscape")
    assert r.status_code == 200, r.text
    task = server.wait(r.json()["id"], timeout=120)
    assert task["status"] == "succeeded", task["failure_reason"]
    assert (task["width"], task["height"], task["n_frames"]) == (96, 64, 9)
    info = probe(_video(server, task, tmp_path))
    assert (info.width, info.height, info.n_frames) == (96, 64, 9)
    assert round(info.fps) == FAMILIES[family].fps == 24
    draft = task["generations"][0]
    assert draft["engine"]["family"] == family and draft["engine"]["placeholder"] is False


def _streams(path):
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        n_video = sum(1 for _ in container.decode(video))
        rate = video.average_rate
        audio = [(s.codec_context.name, s.rate) for s in container.streams.audio]
    samples = 0
    if audio:
        with av.open(str(path)) as container:
            samples = sum(frame.samples for frame in container.decode(container.streams.audio[0]))
    return n_video / float(rate), audio, (samples / audio[0][1] if audio else 0.0)


def test_an_ltx2_task_is_an_mp4_with_one_aac_stream_as_long_as_the_video(server, tmp_path):
    task = server.wait(server.create(model="tiny-ltx2", n_frames=30).json()["id"], timeout=120)
    assert task["status"] == "succeeded", task["failure_reason"]
    seconds, audio, audio_seconds = _streams(_video(server, task, tmp_path))
    assert seconds == pytest.approx(9 / 24)
    assert len(audio) == 1 and audio[0][0] == "aac", audio
    assert audio_seconds == pytest.approx(seconds, abs=1 / 24), (audio_seconds, seconds)
    assert task["generations"][0]["has_audio"] is True

    silent = server.wait(server.create(model="tiny-ltx2", n_frames=30, audio=False).json()["id"], timeout=120)
    assert silent["status"] == "succeeded", silent["failure_reason"]
    assert _streams(_video(server, silent, tmp_path))[1] == []


def test_exact_plans_are_refused_with_the_param_and_the_rule(server):
    def v1(model, size, seconds):
        return server.client.post("/v1/videos", json={"prompt": "x", "model": model, "size": size,
                                                      "seconds": seconds}, headers=server.alice)

    # 720 is not on LTX-2's (nor Wan 2.2's) multiple of 32
    for family in ("ltx2", "wan22-ti2v"):
        error = assert_error(v1(f"tiny-{family}", "1280x720", "4"), 400, "invalid_request", "size")
        assert "multiples of 32" in error["message"] and "1280x704" in error["message"], error
    # HunyuanVideo 1.5 takes 1280x720 (by 16), but not 4 s out of a 9-frame clip
    error = assert_error(v1("tiny-hunyuanvideo15", "1280x720", "4"), 400, "invalid_request", "seconds")
    assert "0.37 seconds (9 frames)" in error["message"], error


# -- the engine: sound, image to video, rules, progress -------------------------------------------

def test_ltx2_hands_its_sound_to_ctx_audio_only_when_asked(weights):
    model = engine(weights, "ltx2")
    assert model.operations() == {"generate", "image", "remix", "extend", "audio"}
    ctx = Ctx()
    frames = list(model.frames(job(audio=True), ctx))
    assert len(frames) == 10 and frames[0].shape == (64, 96, 3)
    [track] = ctx.tracks
    assert track.sample_rate == 24000  # the vocoder's output rate, as LTX-2's
    assert track.samples.dtype == np.float32 and track.samples.shape[0] == 2
    assert np.abs(track.samples).max() <= 1.0 and np.abs(track.samples).max() > 0
    assert track.seconds == pytest.approx(10 / 24, abs=1 / 24)

    quiet = Ctx()
    again = list(model.frames(job(audio=False), quiet))
    assert quiet.tracks == [] and len(again) == 10
    assert np.array_equal(np.stack(frames), np.stack(again))  # the same render, its sound dropped


def test_ltx2_image_to_video_runs_with_sound(weights, tmp_path):
    model = engine(weights, "ltx2")
    assert model.pipeline_class("image") == "LTX2ImageToVideoPipeline"
    ctx = Ctx()
    frames = list(model.frames(job(image=png(tmp_path), audio=True), ctx))
    assert len(frames) == 10 and frames[0].shape == (64, 96, 3)
    assert len(ctx.tracks) == 1 and ctx.tracks[0].seconds == pytest.approx(10 / 24, abs=1 / 24)


def test_ltx2_remix_and_extend_run_on_its_condition_pipeline(weights, tmp_path):
    model = engine(weights, "ltx2")
    source = write_colour_video(tmp_path / "source.mp4", COLOURS[:12], width=96, height=64, fps=24)
    remix = Ctx()
    frames = list(model.frames(job(operation="remix", source=source, strength=0.5, audio=True), remix))
    assert len(frames) == 10 and model.pipeline_class("remix") == "LTX2ConditionPipeline"
    extend = Ctx()
    frames = list(model.frames(job(operation="extend", source=source, image=png(tmp_path), audio=True), extend))
    assert len(frames) == 10
    # the sound of the 9 conditioning frames is dropped with them
    assert extend.tracks[0].seconds == pytest.approx(10 / 24, abs=1 / 24)
    assert model.call_arguments(job(operation="extend", source=source, image=png(tmp_path)))["num_frames"] == 25


def test_ltx2_counts_each_step_once_despite_its_audio_scheduler_copy(weights):
    model = engine(weights, "ltx2", steps=3)
    ctx = Ctx()
    list(model.frames(job(), ctx))
    assert ctx.fractions == pytest.approx([0.3, 0.6, 0.9, 1.0])
    stopped = Ctx(stop_after=2)
    with pytest.raises(Cancelled):
        list(model.frames(job(), stopped))
    assert stopped.fractions == pytest.approx([0.3, 0.6])
    assert type(model.pipeline().scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert len(list(model.frames(job(), Ctx()))) == 10  # the pipeline carries on


def test_ltx2_two_stage_renders_half_size_then_upsamples_and_refines(weights):
    @dataclasses.dataclass(frozen=True)
    class Spec(ModelSpec):  # until ModelSpec has the field
        upsampler_path: str | None = None

    spec = Spec(name="two", family="ltx2", path=str(weights["ltx2"]), dtype="float32", device="cpu", steps=2,
                upsampler_path=str(weights["ltx2-upsampler"]))
    model = DiffusersEngine(spec, weights["ltx2"].parent)
    assert model.unavailable() is None and model.two_stage
    assert dataclasses.astuple(model.plan("landscape", "small", 30))[:2] == (768, 512)
    with pytest.raises(PlanRefused) as refused:
        model.plan_exact(96, 64, 0.25)
    assert refused.value.param == "size" and "at least 128" in refused.value.message
    with pytest.raises(PlanRefused) as refused:
        model.plan_exact(160, 128, 0.25)
    assert "multiples of 64" in refused.value.message
    call = model.prepare(job(width=192, height=128))
    assert (call.args["width"], call.args["height"], call.args["output_type"]) == (96, 64, "latent")
    assert (call.refine["width"], call.refine["height"], call.steps) == (192, 128, 2 + 3)
    ctx = Ctx()
    frames = list(model.frames(job(width=192, height=128, audio=True), ctx))
    assert len(frames) == 10 and frames[0].shape == (128, 192, 3)
    assert ctx.fractions == pytest.approx([0.18, 0.36, 0.54, 0.72, 0.9, 1.0])
    assert len(ctx.tracks) == 1

    missing = DiffusersEngine(dataclasses.replace(spec, upsampler_path=str(weights["ltx2"].parent / "nope")),
                              weights["ltx2"].parent)
    assert "latent upsampler" in missing.unavailable()


def test_hunyuanvideo15_guidance_goes_through_its_guider_and_image_size_is_pinned(weights, tmp_path):
    model = engine(weights, "hunyuanvideo15")
    assert model.operations() == {"generate", "image", "extend"}  # no v2v pipeline in diffusers
    assert "guidance_scale" not in model.call_arguments(job())
    assert model.prepare(job()).guidance is None  # the checkpoint's guider (6.0) as it is
    assert model.prepare(job(params={"guidance_scale": 4.5})).guidance == 4.5
    # its image-to-video pipeline takes no size: the planned one is pinned (the 640 bucket of a
    # 3:2 image would be 768x512)
    ctx = Ctx()
    frames = list(model.frames(job(image=png(tmp_path), audio=True), ctx))
    assert len(frames) == 10 and frames[0].shape == (64, 96, 3)
    assert ctx.tracks == [] and "audio" not in model.operations()
    pipe = model.pipeline(kind="i2v")
    assert "calculate_default_height_width" not in pipe.video_processor.__dict__  # restored


def test_hunyuanvideo15_progress_and_cancel_come_from_the_scheduler_hook(weights):
    model = engine(weights, "hunyuanvideo15", steps=4, image_path=None)
    assert model.operations() == {"generate"}  # its image model is separate weights
    stopped = Ctx(stop_after=2)
    with pytest.raises(Cancelled):
        list(model.frames(job(params={"guidance_scale": 1.0}), stopped))
    assert stopped.fractions == pytest.approx([0.225, 0.45])
    ctx = Ctx()
    assert len(list(model.frames(job(params={"guidance_scale": 1.0}), ctx))) == 10
    assert ctx.fractions == pytest.approx([0.225, 0.45, 0.675, 0.9, 1.0])
    assert model.pipeline().guider.guidance_scale == 1.0


def test_wan22_ti2v_is_one_model_for_text_image_remix_and_extend(weights, tmp_path):
    model = engine(weights, "wan22-ti2v")
    assert model.operations() == {"generate", "image", "remix", "extend"}
    image_pipe = model.pipeline(kind="i2v")
    assert type(image_pipe).__name__ == "WanImageToVideoPipeline" and image_pipe.config.expand_timesteps
    assert image_pipe.transformer is model.pipeline().transformer  # the same weights
    frames = list(model.frames(job(image=png(tmp_path)), Ctx()))
    assert len(frames) == 10 and frames[0].shape == (64, 96, 3)
    source = write_colour_video(tmp_path / "source.mp4", COLOURS[:12], width=96, height=64, fps=24)
    assert len(list(model.frames(job(operation="remix", source=source), Ctx()))) == 10


@pytest.mark.parametrize("family,size,nearest", [
    ("ltx2", (1280, 720), "1280x704 and 1280x736"),
    ("wan22-ti2v", (720, 1280), "704x1280 and 736x1280"),
    ("hunyuanvideo15", (1000, 600), "992x592 and 1008x608"),
])
def test_off_rule_sizes_name_the_nearest_ones(weights, family, size, nearest):
    with pytest.raises(PlanRefused) as refused:
        engine(weights, family).plan_exact(*size, 0.25)
    assert refused.value.param == "size" and nearest in refused.value.message


def test_family_rules_at_full_length():
    # 20 s at 24 fps is LTX-2's longest; HunyuanVideo 1.5 and Wan 2.2 TI2V stop at 121 frames
    assert FAMILIES["ltx2"].plan_exact(768, 512, 20).n_frames == 480
    assert FAMILIES["ltx2"].render_frames(480) == 481
    with pytest.raises(PlanRefused) as refused:
        FAMILIES["ltx2"].plan_exact(32, 512, 4)
    assert "at least 64" in refused.value.message
    for family in ("hunyuanvideo15", "wan22-ti2v"):
        assert FAMILIES[family].plan_exact(1280, 704, 5).n_frames == 120
        with pytest.raises(PlanRefused) as refused:
            FAMILIES[family].plan_exact(1280, 704, 6)
        assert refused.value.param == "seconds" and "5.04 seconds (121 frames)" in refused.value.message
    assert dataclasses.astuple(FAMILIES["wan22-ti2v"].plan("landscape", "large", 150)) == (1280, 704, 121, 24)
    assert dataclasses.astuple(FAMILIES["hunyuanvideo15"].plan("portrait", "small", 150)) == (480, 848, 121, 24)


def test_an_uploaded_image_starts_an_ltx2_task(server, tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (220, 120, 20)).save(buf, format="PNG")
    upload = server.client.post("/backend/uploads", files={"file": ("start.png", buf.getvalue(), "image/png")},
                                data={"file_name": "start.png"}, headers=server.alice).json()
    r = server.create(model="tiny-ltx2", n_frames=30, inpaint_items=[{"kind": "upload", "upload_id": upload["id"]}])
    assert r.status_code == 200, r.text
    task = server.wait(r.json()["id"], timeout=120)
    assert task["status"] == "succeeded", task["failure_reason"]
    assert probe(_video(server, task, tmp_path)).n_frames == 9
