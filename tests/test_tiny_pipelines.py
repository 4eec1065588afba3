"""The tiny in-code diffusers pipelines (tests/tiny_pipelines.py) save, load and generate offline."""

from __future__ import annotations

import functools
import json
import types

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tiny_pipelines import (  # noqa: E402
    FAMILIES,
    PIPELINE_CLASS_NAMES,
    TINY_CALL,
    build_pipeline,
    build_tokenizer,
    pipeline_class,
    save_pipeline,
)

pytestmark = pytest.mark.diffusers

CASES = [(family, i2v) for family in FAMILIES for i2v in (False, True)]
IDS = [f"{family}-{'i2v' if i2v else 't2v'}" for family, i2v in CASES]

# What the tiny configs expose on a loaded pipeline (same factors as the real checkpoints).
EXPECTED_FACTORS = {
    "wan": {"vae_scale_factor_spatial": 8, "vae_scale_factor_temporal": 4},
    "ltx": {"vae_spatial_compression_ratio": 32, "vae_temporal_compression_ratio": 8,
            "transformer_spatial_patch_size": 1, "transformer_temporal_patch_size": 1},
    "cogvideox": {"vae_scale_factor_spatial": 8, "vae_scale_factor_temporal": 4},
}
EXPECTED_PATCH = {"wan": [1, 2, 2], "ltx": 1, "cogvideox": 2}


class _Cancelled(Exception):
    pass


@pytest.fixture(autouse=True)
def _ftfy_shim(monkeypatch):
    """diffusers 0.42's WanImageToVideoPipeline calls ``ftfy.fix_text`` even when ftfy is not
    installed (WanPipeline guards it), raising NameError.  Install ftfy to fix it for real."""
    from diffusers.pipelines.wan import pipeline_wan_i2v

    if not hasattr(pipeline_wan_i2v, "ftfy"):
        monkeypatch.setattr(pipeline_wan_i2v, "ftfy", types.SimpleNamespace(fix_text=lambda s: s), raising=False)


def _generate(pipe, i2v: bool, steps: int = 2, **overrides):
    kwargs = dict(TINY_CALL, **overrides)
    if i2v:
        # A non-square image of another size: the pipeline resizes it to (height, width).
        image = Image.new("RGB", (80, 48), (200, 40, 30))
        image.paste((20, 60, 220), (40, 0, 80, 48))
        kwargs["image"] = image
    out = pipe(prompt="a red kite over a grey sea", negative_prompt="blurry", num_inference_steps=steps,
               guidance_scale=5.0, generator=torch.Generator().manual_seed(0), output_type="np", **kwargs)
    return np.asarray(out.frames)


@pytest.mark.parametrize(("family", "i2v"), CASES, ids=IDS)
def test_save_load_generate(tmp_path, family, i2v):
    built = build_pipeline(family, i2v=i2v)
    built.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == PIPELINE_CLASS_NAMES[(family, i2v)]

    generic = diffusers.DiffusionPipeline.from_pretrained(tmp_path)
    assert type(generic) is pipeline_class(family, i2v=i2v)
    specific = pipeline_class(family, i2v=i2v).from_pretrained(tmp_path)
    for name, value in EXPECTED_FACTORS[family].items():
        assert getattr(specific, name) == value, name
    assert specific.transformer.config.patch_size == EXPECTED_PATCH[family]
    if family == "cogvideox":
        assert specific.transformer.config.patch_size_t is None
        assert specific.transformer.config.use_learned_positional_embeddings is i2v

    for pipe in (generic, specific):
        pipe.set_progress_bar_config(disable=True)
    first = _generate(specific, i2v)
    assert first.shape == (1, TINY_CALL["num_frames"], TINY_CALL["height"], TINY_CALL["width"], 3)
    assert first.dtype == np.float32
    assert np.isfinite(first).all()
    assert first.min() >= 0.0 and first.max() <= 1.0
    assert first.std() > 0  # not a constant image
    np.testing.assert_array_equal(_generate(specific, i2v), first)  # same seed, same video
    np.testing.assert_array_equal(_generate(generic, i2v), first)  # both loaders, same weights
    np.testing.assert_allclose(_generate(built, i2v), first, atol=1e-5)  # save/load round trip


@pytest.mark.parametrize("family", FAMILIES)
def test_weights_are_deterministic_in_seed(family):
    a = build_pipeline(family, seed=3).transformer.state_dict()
    b = build_pipeline(family, seed=3).transformer.state_dict()
    c = build_pipeline(family, seed=4).transformer.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_build_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_pipeline("ltx")
    assert torch.equal(torch.rand(3), expected)


def test_tokenizer_round_trip(tmp_path):
    from transformers import AutoTokenizer

    tok = build_tokenizer()
    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    kwargs = dict(padding="max_length", max_length=16, truncation=True, add_special_tokens=True,
                  return_attention_mask=True, return_tensors="pt")
    for prompt in ("a red kite over a grey sea", "Zebra #42 ünïcode"):
        a, b = tok(prompt, **kwargs), loaded(prompt, **kwargs)
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.attention_mask, b.attention_mask)
    ids = tok("a red kite", **kwargs)
    assert ids.input_ids.shape == (1, 16)
    assert tok.convert_ids_to_tokens(ids.input_ids[0, :4].tolist()) == ["\u2581a", "\u2581red", "\u2581kite", "</s>"]
    assert ids.attention_mask.sum() == 4 and (ids.input_ids[0, 4:] == tok.pad_token_id).all()


@pytest.mark.parametrize(("family", "i2v"), [(f, False) for f in FAMILIES] + [("wan", True)],
                         ids=[f"{f}-t2v" for f in FAMILIES] + ["wan-i2v"])
def test_scheduler_step_wrapper_counts_and_cancels(family, i2v):
    """The engine's progress/cancel hook: one ``scheduler.step`` call per inference step (CFG is
    batched or done before the step), and an exception raised there aborts the whole call.
    ``functools.wraps`` matters: CogVideoX inspects ``scheduler.step``'s signature to decide
    whether to pass ``generator``/``eta`` (its DPM scheduler draws noise)."""
    pipe = build_pipeline(family, i2v=i2v)
    plain = _generate(pipe, i2v, steps=3)

    calls = []
    original = pipe.scheduler.step

    @functools.wraps(original)
    def step(*args, **kwargs):
        calls.append(1)
        if cancel_at is not None and len(calls) == cancel_at:
            raise _Cancelled()
        return original(*args, **kwargs)

    pipe.scheduler.step = step
    cancel_at = None
    np.testing.assert_array_equal(_generate(pipe, i2v, steps=3), plain)
    assert len(calls) == 3
    calls.clear()
    cancel_at = 2
    with pytest.raises(_Cancelled):
        _generate(pipe, i2v, steps=3)
    assert len(calls) == 2
    calls.clear()
    cancel_at = None
    np.testing.assert_array_equal(_generate(pipe, i2v, steps=3), plain)  # still usable afterwards


def test_bench_scale_wan_runs():
    pipe = build_pipeline("wan", scale="bench")
    assert pipe.transformer.config.num_layers > build_pipeline("wan").transformer.config.num_layers
    frames = pipe(prompt="a cat", num_inference_steps=1, output_type="np", **TINY_CALL).frames
    assert frames.shape == (1, TINY_CALL["num_frames"], TINY_CALL["height"], TINY_CALL["width"], 3)


@pytest.mark.parametrize("family", ["ltx", "cogvideox"])
def test_bench_scale_is_wan_only(family):
    with pytest.raises(NotImplementedError):
        build_pipeline(family, scale="bench")


def test_save_pipeline_returns_dest(tmp_path):
    dest = save_pipeline("wan", tmp_path / "nested" / "wan")
    assert dest == tmp_path / "nested" / "wan"
    assert json.loads((dest / "model_index.json").read_text())["_class_name"] == "WanPipeline"
