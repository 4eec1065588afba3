"""Exact plans (the official API's size x seconds) on every engine: which are refused, with which
``param``, and that the accepted ones come out exactly that size, frame count and duration."""

from __future__ import annotations

import pytest

from sorakit.engines import PlanRefused
from sorakit.engines.diffusers_engine import DiffusersEngine
from sorakit.engines.families import FAMILIES
from sorakit.engines.models import parse_spec
from sorakit.engines.preview import PreviewEngine

SIZES = ["720x1280", "1280x720", "1024x1792", "1792x1024", "1920x1080", "1080x1920"]
SECONDS = [4, 8, 12, 16, 20]
#: written out by hand (not recomputed from the rules): sizes and seconds each family makes
ACCEPTED = {
    "wan": ({"720x1280", "1280x720", "1024x1792", "1792x1024"}, {4}),  # 16 px; 81 frames at 16 fps
    "ltx": ({"1024x1792", "1792x1024"}, {4, 8}),  # 32 px; 257 frames at 24 fps
    "cogvideox": ({"720x1280", "1280x720", "1024x1792", "1792x1024"}, {4}),  # 16 px; 49 at 8 fps
}
#: frames the MP4 holds for 4 and 8 seconds, and the count the model renders for them
RENDERED = {("wan", 4): (64, 65), ("ltx", 4): (96, 97), ("ltx", 8): (192, 193), ("cogvideox", 4): (32, 33)}
LONGEST = {"wan": "5.06 seconds (81 frames)", "ltx": "10.7 seconds (257 frames)",
           "cogvideox": "6.12 seconds (49 frames)"}


def engine(family: str, tmp_path, **table) -> DiffusersEngine:
    return DiffusersEngine(parse_spec(family, {"family": family, "path": "x", **table}), tmp_path)


def dims(size: str) -> tuple[int, int]:
    width, height = size.split("x")
    return int(width), int(height)


@pytest.mark.parametrize("family", sorted(ACCEPTED))
def test_each_family_accepts_exactly_its_sizes_and_durations(family, tmp_path):
    model = engine(family, tmp_path)
    sizes, seconds_ok = ACCEPTED[family]
    for size in SIZES:
        for seconds in SECONDS:
            if size not in sizes:
                with pytest.raises(PlanRefused) as refused:
                    model.plan_exact(*dims(size), seconds)
                assert refused.value.param == "size", (size, seconds)
            elif seconds not in seconds_ok:
                with pytest.raises(PlanRefused) as refused:
                    model.plan_exact(*dims(size), seconds)
                assert refused.value.param == "seconds", (size, seconds)
                assert LONGEST[family] in refused.value.message
            else:
                plan = model.plan_exact(*dims(size), seconds)
                fps = FAMILIES[family].fps
                assert (plan.width, plan.height, plan.fps) == (*dims(size), fps)
                assert plan.n_frames == seconds * fps == RENDERED[(family, seconds)][0]
                assert FAMILIES[family].render_frames(plan.n_frames) == RENDERED[(family, seconds)][1]


@pytest.mark.parametrize("family,size,nearest", [
    ("wan", "1920x1080", "1920x1072 and 1920x1088"),
    ("ltx", "1280x720", "1280x704 and 1280x736"),
    ("ltx", "1080x1920", "1056x1920 and 1088x1920"),
])
def test_a_size_off_the_multiple_names_it_and_the_nearest_sizes(family, size, nearest, tmp_path):
    with pytest.raises(PlanRefused) as refused:
        engine(family, tmp_path).plan_exact(*dims(size), 4)
    message = refused.value.message
    assert refused.value.param == "size"
    assert f"multiples of {FAMILIES[family].multiple}" in message and nearest in message
    assert message.startswith(f"Model '{family}': {size}")


def test_cogvideox_image_to_video_makes_only_its_fixed_size(tmp_path):
    model = engine("cogvideox", tmp_path, image_path="y")
    for size in SIZES:
        with pytest.raises(PlanRefused, match="only 720x480") as refused:
            model.plan_exact(*dims(size), 4, image=True)
        assert refused.value.param == "size"
    plan = model.plan_exact(720, 480, 4, image=True)
    assert (plan.width, plan.height, plan.n_frames, plan.fps) == (720, 480, 32, 8)
    assert model.plan_exact(1280, 720, 4).width == 1280  # text-to-video is free to take it


def test_the_models_own_fps_and_max_frames_rule(tmp_path):
    # Wan 2.2 TI2V 5B: 24 fps, 121 frames
    wan22 = engine("wan", tmp_path, fps=24, max_frames=121)
    plan = wan22.plan_exact(1280, 720, 4)
    assert (plan.n_frames, plan.fps) == (96, 24) and FAMILIES["wan"].render_frames(96) == 97
    with pytest.raises(PlanRefused, match=r"5\.04 seconds \(121 frames\)") as refused:
        wan22.plan_exact(1280, 720, 8)
    assert refused.value.param == "seconds"
    # a lower cap than the family's: 8 s of LTX (193 rendered frames) no longer fits 161
    with pytest.raises(PlanRefused, match=r"161 frames"):
        engine("ltx", tmp_path, max_frames=161).plan_exact(1792, 1024, 8)


def test_web_plans_render_as_planned():
    """/backend tasks already hold counts on the rule: rounding up to the rule leaves them alone."""
    for family in FAMILIES.values():
        for n_frames in range(1, 751):
            planned = family.plan("landscape", "small", n_frames).n_frames
            assert family.render_frames(planned) == planned


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_render_count_is_the_smallest_on_the_rule_at_or_above(family):
    f = FAMILIES[family]
    for wanted in range(2, f.max_frames + 1):
        got = f.render_frames(wanted)
        assert got >= wanted and (got - 1) % f.frame_step == 0 and got - f.frame_step < wanted


def test_preview_engine_makes_any_even_size_at_30_fps():
    preview = PreviewEngine()
    for size in SIZES:
        for seconds in SECONDS:
            plan = preview.plan_exact(*dims(size), seconds)
            assert (plan.width, plan.height, plan.n_frames, plan.fps) == (*dims(size), seconds * 30, 30)
    with pytest.raises(PlanRefused) as refused:
        preview.plan_exact(1279, 720, 4)
    assert refused.value.param == "size"


# -- tiny real pipelines: an exact plan renders, encodes and decodes back exactly -----------------

class _Ctx:
    def progress(self, fraction):
        pass

    def check_cancel(self):
        pass


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from tiny_pipelines import save_pipeline

    root = tmp_path_factory.mktemp("weights")
    return {family: save_pipeline(family, root / family) for family in FAMILIES}


@pytest.mark.diffusers
@pytest.mark.parametrize("family,rendered", [("wan", 13), ("ltx", 17), ("cogvideox", 13)])
def test_tiny_pipeline_renders_an_exact_plan_exactly(family, rendered, tiny_weights, tmp_path):
    from sorakit.engines import RenderJob
    from sorakit.media.encode import encode_mp4, probe

    # 3 fps keeps the tiny models quick: 4 s is 12 frames, off every family's rule
    model = engine(family, tmp_path, path=str(tiny_weights[family]), dtype="float32", device="cpu",
                   steps=2, fps=3, max_frames=17)
    plan = model.plan_exact(64, 32, 4)
    assert (plan.width, plan.height, plan.n_frames, plan.fps) == (64, 32, 12, 3)
    job = RenderJob("task_x", "a red kite over a grey sea", plan.width, plan.height, plan.n_frames,
                    plan.fps, seed=3)
    assert model.call_arguments(job)["num_frames"] == rendered  # the next count the model takes
    path = tmp_path / "exact.mp4"
    result = encode_mp4(model.frames(job, _Ctx()), path, width=plan.width, height=plan.height,
                        fps=plan.fps, expected_frames=plan.n_frames)
    info = probe(path)
    assert result.n_frames == info.n_frames == 12
    assert (info.width, info.height) == (64, 32) and info.fps == pytest.approx(3.0)
    assert info.duration_s == pytest.approx(4.0, abs=0.01)
