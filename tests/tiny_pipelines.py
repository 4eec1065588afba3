"""Tiny random-weight diffusers video pipelines of real architectures, built entirely in code.

Nothing is downloaded: every component (transformer, VAE, T5/UMT5 text encoder, CLIP image
encoder, scheduler and the T5 tokenizer itself) is constructed from a config here, with weights
drawn from the torch RNG seeded by ``seed`` (the caller's global RNG state is left untouched).
``save_pipeline`` writes a normal diffusers checkpoint directory (``model_index.json`` + one
folder per component, safetensors), so ``<PipelineClass>.from_pretrained(dest)`` or
``DiffusionPipeline.from_pretrained(dest)`` loads it offline exactly like a hub snapshot.

Public API::

    FAMILIES = ("wan", "ltx", "cogvideox")
    NEW_FAMILIES = ("ltx2", "hunyuanvideo15", "wan22-ti2v")   # ALL_FAMILIES: both
    build_pipeline(family, *, i2v=False, seed=0, scale="tiny") -> DiffusionPipeline
    save_pipeline(family, dest, *, i2v=False, seed=0, scale="tiny") -> Path
    save_ltx2_upsampler(dest, seed=0) -> Path             # a tiny LTX2LatentUpsamplerModel folder
    build_tokenizer() -> transformers.T5Tokenizer        # tiny Unigram vocab, 158 pieces
    build_gemma_tokenizer() / build_qwen_tokenizer()     # BPE, for LTX-2 / HunyuanVideo 1.5
    pipeline_class(family, *, i2v=False) -> diffusers pipeline class
    PIPELINE_CLASS_NAMES[(family, i2v)] -> its name (== model_index.json "_class_name")
    TINY_CALL = {"height": 32, "width": 64, "num_frames": 9}   # valid for all six tiny pipelines
    NEW_TINY_CALL = {"height": 64, "width": 96, "num_frames": 9}   # valid for the NEW_FAMILIES' six
    BENCH_CALL = {"height": 128, "width": 128, "num_frames": 25}  # scale="bench", >= 10 s

Pipelines, (family, i2v) -> class:

* wan: ``WanPipeline`` / ``WanImageToVideoPipeline`` (Wan 2.1 I2V: CLIP image encoder
  ``CLIPVisionModel`` + CLIP image processor, 36-channel transformer input, added K/V image
  attention).  Text encoder ``UMT5EncoderModel``.
* ltx: ``LTXPipeline`` / ``LTXImageToVideoPipeline`` (LTX-Video 0.9.0-style VAE), ``T5EncoderModel``.
* cogvideox: ``CogVideoXPipeline`` / ``CogVideoXImageToVideoPipeline`` (CogVideoX-5b and -5b-I2V
  style: 3D RoPE, ``patch_size_t=None``, ``CogVideoXDPMScheduler``), ``T5EncoderModel``.
All use a ``T5Tokenizer`` (tokenizers-backed Unigram, as the real checkpoints) and run with the
pipelines' default ``max_sequence_length`` (wan 512, ltx 128, cogvideox 226).

The tiny configs KEEP THE REAL MODELS' COMPRESSION FACTORS AND PATCH SIZES (only widths and
depths are tiny), so the size/frame rules below hold for the real checkpoints too.  Every value
was checked on a pipeline loaded back with ``from_pretrained`` (see test_tiny_pipelines.py).

wan (Wan 2.1)
    VAE x8 spatial, x4 temporal; transformer patch (t, h, w) = (1, 2, 2).
    Read: ``pipe.vae_scale_factor_spatial`` (8), ``pipe.vae_scale_factor_temporal`` (4),
    ``pipe.transformer.config.patch_size`` ([1, 2, 2]).
    Frames 4k+1; other n are changed (with a logged warning) to ``n // 4 * 4 + 1`` (8 -> 9).
    Height/width multiples of 16 (= 8 * 2); anything else raises ValueError (t2v and i2v).
    I2V: keep ``max_sequence_length=512`` -- the attention processor hard-codes 512 text tokens to
    split off the image tokens; another value runs but silently mixes image/text context.
    Real: 16 fps; 832x480 (480P) and 1280x720 (720P); 81 frames.  Scheduler here, as in
    Wan-AI/Wan2.1-*-Diffusers: ``UniPCMultistepScheduler(prediction_type="flow_prediction",
    use_flow_sigmas=True, flow_shift=3.0)`` (diffusers docs: flow_shift 3.0 for 480P, 5.0 for 720P).

ltx (LTX-Video)
    VAE x32 spatial, x8 temporal (VAE patch_size 4 and three spatio-temporal downsamplings);
    transformer patch_size 1, patch_size_t 1.
    Read: ``pipe.vae_spatial_compression_ratio`` (32), ``pipe.vae_temporal_compression_ratio`` (8),
    ``pipe.transformer_spatial_patch_size`` / ``pipe.transformer_temporal_patch_size`` (1 / 1; the
    same as ``pipe.transformer.config.patch_size`` / ``.patch_size_t``).
    Frames 8k+1; other n SILENTLY give ``(n - 1) // 8 * 8 + 1`` frames (8 -> 1, 16 -> 9).
    Height/width multiples of 32; anything else raises ValueError.
    ``frame_rate`` call argument (default 25) only scales the RoPE; the real model is 24-25 fps
    (diffusers' example exports at 24).  Real: 768x512 native, 704x480 in the diffusers example,
    161 frames default (up to 257).  Scheduler: ``FlowMatchEulerDiscreteScheduler`` with dynamic
    shifting and ``shift_terminal=0.1`` as Lightricks/LTX-Video -- which makes
    ``num_inference_steps=1`` crash (IndexError after a 0/0 in the terminal stretch): use >= 2.

cogvideox (CogVideoX 1.0, 5b-style)
    VAE x8 spatial (``2 ** (len(vae.config.block_out_channels) - 1)``), x4 temporal; transformer
    patch_size 2, ``patch_size_t`` None (CogVideoX 1.5 has 2 and pads latent frames up to it).
    Read: ``pipe.vae_scale_factor_spatial`` (8), ``pipe.vae_scale_factor_temporal`` (4),
    ``pipe.transformer.config.patch_size`` (2), ``pipe.transformer.config.patch_size_t`` (None).
    Frames: n = 8k+1 (or 8k) come out exactly; with T = (n - 1) // 4 + 1 latent frames the
    VAE decodes 4T - 3 frames for odd T and 4T for even T (13 -> 16, 21 -> 24, 5 -> 8) -- no warning.
    Height/width multiples of 16 (= 8 * 2); others fail (ValueError if not /8, else a shape
    RuntimeError inside the transformer).
    I2V ONLY: like THUDM/CogVideoX-5b-I2V, the transformer has learned positional embeddings
    (``transformer.config.use_learned_positional_embeddings`` is True), so the resolution is FIXED
    at ``sample_width * 8`` x ``sample_height * 8`` (tiny 64x32, real 720x480; ``height=None,
    width=None`` picks it), and ``max_sequence_length`` must equal
    ``transformer.config.max_text_seq_length`` (226, the default); else ValueError/RuntimeError.
    The frame count stays free.
    Real: 8 fps, 720x480, 49 frames (CogVideoX1.5: 16 fps, 1360x768, 81 frames).  Scheduler as
    THUDM/CogVideoX-5b: ``CogVideoXDPMScheduler`` (v_prediction, trailing, zero-terminal-SNR).

Notes for an engine driving these pipelines (all checked on the tiny models):
* Every one of the six calls ``pipe.scheduler.step`` exactly once per inference step, with or
  without classifier-free guidance (Wan runs two transformer passes, LTX/CogVideoX one batched
  pass, then one step).  Wrapping the instance's bound method works for progress and for
  cancelling (an exception raised there propagates out of ``pipe(...)`` and the pipeline stays
  usable), but wrap with ``functools.wraps``: CogVideoX inspects ``scheduler.step``'s signature
  to decide whether to pass ``generator``/``eta``, and with a bare ``(*args, **kwargs)`` wrapper
  its DPM scheduler silently draws noise from the global RNG (non-reproducible output).
* All six accept ``callback_on_step_end(pipe, i, t, kwargs) -> kwargs`` (called after each
  step).  Setting ``pipe._interrupt = True`` there skips the remaining steps but still VAE-decodes
  and returns a (noisy) video; raising is the clean cancel.
* diffusers 0.42 deprecates ``from_pretrained(torch_dtype=...)`` (FutureWarning): use ``dtype=``
  (a dict such as ``{"default": torch.bfloat16, "vae": torch.float32}`` works too).
* ``WanImageToVideoPipeline`` in diffusers 0.42 calls ``ftfy.fix_text`` unguarded, so it raises
  NameError unless the ``ftfy`` package is installed (``WanPipeline`` guards it).

Timings on 2 CPU cores (torch 2.13): each tiny pipeline builds+saves in < 0.5 s, loads in ~0.1 s
and generates TINY_CALL in 2 steps with CFG in 0.03-0.5 s.

Video to video (remix/extend; checked on these tiny models, diffusers 0.42.1).  The v2v
pipelines take the text-to-video weights: ``V2V_CLASS_NAMES[family]``, built on a t2v pipeline's
components with ``build_v2v(t2v_pipe)`` (none of them has a checkpoint of its own):
* wan ``WanVideoToVideoPipeline(video=, strength=0.8, ...)`` and cogvideox
  ``CogVideoXVideoToVideoPipeline(video=, strength=0.8, ...)``: no ``num_frames`` argument (a
  TypeError): the output has the input video's length (give it 4k+1 frames).  SDEdit: the video
  is VAE-encoded, noised to the ``strength`` point of the schedule and only
  ``min(int(num_inference_steps * strength), num_inference_steps)`` steps run (``scheduler.step``
  calls); ``int(steps * strength) == 0`` leaves no timestep at all (``timesteps[:1]`` is empty):
  run at least one.
* ltx ``LTXConditionPipeline(conditions=[LTXVideoCondition(video=|image=, frame_index=0,
  strength=1.0)], num_frames=, frame_rate=, ...)``: the condition's latents are lerped into the
  noise with its ``strength`` and held at noise level ``1 - strength`` (per-token timesteps) until
  the schedule reaches it, so every step runs; a condition video is trimmed to 8k+1 frames and
  comes back as the render's first frames.  It sets its own linear-quadratic ``timesteps`` and
  passes no ``mu``, so with this (LTX-Video 0.9.0) dynamically shifting scheduler it raises
  "`mu` must be passed ..." -- ``build_v2v`` gives it a copy with ``use_dynamic_shifting=False``.
  The T2V/I2V pipelines' ``denoise_strength`` is another v2v route but needs the caller to pass
  the source's latents.
* ``<V2V>.from_pipe(t2v)`` builds all three, but ``from_pipe`` ``.to(dtype)``-casts every shared
  module (float32 unless ``dtype=`` is given), re-casting the t2v pipeline as well (and
  ``dtype=torch.bfloat16`` down-casts the modules ``from_pretrained`` keeps in float32): build
  from ``components`` instead, as ``build_v2v`` does.
* The image-to-video pipelines return (a VAE round trip of) the conditioning image as frame 0.

The newer families (NEW_FAMILIES; kept out of FAMILIES, whose tests call 64x32), checked the same way:

ltx2 (LTX-2: ``LTX2Pipeline`` / ``LTX2ImageToVideoPipeline`` on the same modules; v2v
``LTX2ConditionPipeline``)
    Video VAE as LTX-2's: patch 4, downsamplings spatial/temporal/spatiotemporal/spatiotemporal, x32
    spatial and x8 temporal (its config must state ``spatial_compression_ratio=32,
    temporal_compression_ratio=8``: the default formula counts every scaling block as both and says
    64/16).  ``check_inputs`` refuses sizes off 32; the decoder pads by reflection, so a latent side
    of 1 (32 px) crashes: at least 64 px.  Frames 8k+1 (others floor to it).  Sound: audio VAE at
    16 kHz, hop 160, x4 -> 25 latents/s; mel bins 16 here (latent channels x latent mel bins must
    equal its ``base_channels`` = the transformer's audio channels); vocoder x6x5x2x2x2 -> 24 kHz as
    real.  ``output.audio`` is a torch tensor (batch, 2, samples) even with ``output_type="np"``;
    the causal audio VAE gives ``4L - 3`` mel frames for L latents (9 frames at 24 fps: 0.33 s of
    sound for 0.375 s of video).  Text: a tiny ``Gemma3ForConditionalGeneration`` (2 layers, 16 wide;
    the connectors take ``caption_channels`` = 16 and ``text_proj_in_factor`` = layers + 1) and a BPE
    ``GemmaTokenizer``; the pipeline pads prompts to 1024 tokens.  The pipeline defaults (CFG 3, STG
    1 on block 28, modality 3, audio CFG 7) run 3-4 transformer passes per step.  It deep-copies its
    scheduler for the audio latents (a hook on the instance would be copied with it).
    ``save_ltx2_upsampler``: ``LTX2LatentUpsamplerModel`` (GroupNorm(32): ``mid_channels`` >= 32).
hunyuanvideo15 (HunyuanVideo 1.5: ``HunyuanVideo15Pipeline`` / ``HunyuanVideo15ImageToVideoPipeline``,
separate weights)
    VAE x16 spatial, x4 temporal (as real, tiny widths); transformer patch 1: sizes by 16, 4k+1.
    Text: ``Qwen2_5_VLTextModel`` + a byte-level BPE ``Qwen2Tokenizer`` with a ChatML template (the
    pipeline calls ``apply_chat_template`` and pads to 1108 tokens, cropping the first 108), plus a
    ByT5 ``T5EncoderModel`` (vocab 384) for quoted glyph text.  Guidance only through the ``guider``
    component (``ClassifierFreeGuidance(guidance_scale=6.0)``; no ``guidance_scale`` argument).  The
    I2V pipeline has no ``height``/``width``: it picks the aspect bucket nearest the image at the
    transformer's ``target_size`` (640: a 96x64 image renders 768x512), and a SigLIP image encoder
    with 729 tokens (27 x 27, as so400m).  Neither takes a step callback; each calls
    ``scheduler.step`` once a step, so the scheduler hook gives progress and cancel.
wan22-ti2v (Wan 2.2 TI2V 5B: ``WanPipeline(expand_timesteps=True)`` / ``WanImageToVideoPipeline`` on
the same modules, no image encoder)
    VAE z_dim 48 with patch 2: x16 spatial (``scale_factor_spatial``), x4 temporal; transformer patch
    (1, 2, 2): sizes by 32.  ``WanVideoToVideoPipeline`` computes its factors from the VAE's
    downsampling count (x8) instead of its config, so remix needs them set to 16 (the engine does);
    its scalar timesteps equal TI2V's per-token ones when no frame is fixed (checked: 7e-7).

``write_colour_video(path, colours, ...)`` writes an MP4 of solid-colour frames (one colour per
frame) for v2v sources, ``COLOURS`` 16 well-separated ones and ``nearest_colour`` classifies a frame.

``scale="bench"`` (wan t2v/i2v only; other families raise NotImplementedError): a 15.6M-parameter
Wan transformer (6 layers, 6x64 heads; 63 MB saved) and a wider VAE.
``pipe(prompt, **BENCH_CALL)`` -- 128x128, 25 frames, default 50 steps, guidance 5.0, i.e. 100
transformer passes -- took 14.7 s at best on 2 idle cores (18-30 s with other load); time scales
about linearly with ``num_inference_steps``.  The VAE decode is ~10% of it.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

FAMILIES = ("wan", "ltx", "cogvideox")
#: the families added with sound and the newer models (kept apart: FAMILIES' tests use a 64x32 call)
NEW_FAMILIES = ("ltx2", "hunyuanvideo15", "wan22-ti2v")
ALL_FAMILIES = FAMILIES + NEW_FAMILIES
SCALES = ("tiny", "bench")

PIPELINE_CLASS_NAMES = {
    ("wan", False): "WanPipeline",
    ("wan", True): "WanImageToVideoPipeline",
    ("ltx", False): "LTXPipeline",
    ("ltx", True): "LTXImageToVideoPipeline",
    ("cogvideox", False): "CogVideoXPipeline",
    ("cogvideox", True): "CogVideoXImageToVideoPipeline",
    ("ltx2", False): "LTX2Pipeline",
    ("ltx2", True): "LTX2ImageToVideoPipeline",
    ("hunyuanvideo15", False): "HunyuanVideo15Pipeline",
    ("hunyuanvideo15", True): "HunyuanVideo15ImageToVideoPipeline",
    ("wan22-ti2v", False): "WanPipeline",
    ("wan22-ti2v", True): "WanImageToVideoPipeline",
}

# Video-to-video pipelines on the t2v weights (see the module docstring).
V2V_CLASS_NAMES = {
    "wan": "WanVideoToVideoPipeline",
    "ltx": "LTXConditionPipeline",
    "cogvideox": "CogVideoXVideoToVideoPipeline",
    "ltx2": "LTX2ConditionPipeline",
    "wan22-ti2v": "WanVideoToVideoPipeline",
}

# 16 solid colours, each at least 60 apart (RGB distance) from every other.
COLOURS = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (128, 0, 0),
    (170, 255, 195), (0, 0, 128), (255, 255, 255), (0, 0, 0),
]

# Call kwargs valid for all six tiny pipelines (CogVideoX I2V only accepts exactly 64x32).
TINY_CALL = {"height": 32, "width": 64, "num_frames": 9}
# Valid for the NEW_FAMILIES' tiny pipelines (LTX-2's VAE decoder needs >= 2 latent rows: 64 px).
NEW_TINY_CALL = {"height": 64, "width": 96, "num_frames": 9}

# The bench-scale (wan) call that takes >= 10 s on 2 CPU cores with the default 50 steps and
# guidance 5.0: measured 14.7 s at best (18-30 s with other load on the machine).
BENCH_CALL = {"height": 128, "width": 128, "num_frames": 25}

_TEXT_DIM = 32  # d_model of the tiny T5/UMT5 encoders


# --------------------------------------------------------------------------- tokenizer

def _vocab() -> list[tuple[str, float]]:
    """A small T5-style Unigram vocabulary: specials, word-start pieces and bare characters."""
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    words = ("a an the of in on at to and with over under red blue green grey gray white black "
             "cat dog kite sea sky city street car man woman person walking running flying "
             "video scene camera slow motion sunset night day water tree forest mountain").split()
    pieces += [("\u2581" + w, -3.0) for w in words]
    chars = string.ascii_lowercase + string.digits
    pieces += [("\u2581" + c, -6.0) for c in chars]
    pieces += [(c, -7.0) for c in chars + string.ascii_uppercase + ".,!?'\"-:;()"]
    return pieces


def build_tokenizer():
    """A real ``T5Tokenizer`` (tokenizers-backed Unigram, as the T5/UMT5 checkpoints use)."""
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=_vocab(), extra_ids=0, model_max_length=512)


def _vocab_size() -> int:
    n = len(_vocab())
    return (n + 63) // 64 * 64  # round up like real embeddings (and leave spare ids)


def _t5_config_kwargs() -> dict:
    return dict(
        vocab_size=_vocab_size(),
        d_model=_TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        tie_word_embeddings=False,
    )


def _t5_encoder():
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(**_t5_config_kwargs())).eval()


def _umt5_encoder():
    from transformers import UMT5Config, UMT5EncoderModel

    return UMT5EncoderModel(UMT5Config(**_t5_config_kwargs())).eval()


# --------------------------------------------------------------------------- families

def _wan(i2v: bool, scale: str) -> dict:
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel

    if scale == "tiny":
        heads, head_dim, ffn, layers = 2, 12, 32, 2
        vae = dict(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1)
    else:  # bench
        # ~15.6M transformer parameters (63 MB on disk): compute-bound but quick to save/load.
        heads, head_dim, ffn, layers = 6, 64, 1536, 6
        vae = dict(base_dim=8, dim_mult=[1, 2, 2, 2], num_res_blocks=1)
    inner = heads * head_dim
    components = {}
    components["vae"] = AutoencoderKLWan(z_dim=16, temperal_downsample=[False, True, True], **vae)
    components["scheduler"] = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
        num_train_timesteps=1000, solver_order=2, solver_type="bh2", lower_order_final=True,
    )
    components["text_encoder"] = _umt5_encoder()
    components["tokenizer"] = build_tokenizer()
    transformer = dict(
        patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim,
        in_channels=16, out_channels=16, text_dim=_TEXT_DIM, freq_dim=256, ffn_dim=ffn,
        num_layers=layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6,
        rope_max_seq_len=1024,
    )
    if i2v:
        from transformers import CLIPVisionConfig, CLIPVisionModel

        try:  # without torchvision, transformers 5 falls back to the PIL backend anyway (with a warning)
            from transformers import CLIPImageProcessorPil as CLIPImageProcessor
        except ImportError:  # pragma: no cover - older transformers
            from transformers import CLIPImageProcessor

        clip_dim = 16
        # 36 = 16 noise latents + 4 mask channels (vae temporal factor) + 16 image latents
        transformer.update(in_channels=36, image_dim=clip_dim, added_kv_proj_dim=inner)
        components["image_encoder"] = CLIPVisionModel(CLIPVisionConfig(
            hidden_size=clip_dim, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
            image_size=32, patch_size=8, projection_dim=clip_dim,
        )).eval()
        components["image_processor"] = CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
        )
        components["transformer_2"] = None
    components["transformer"] = WanTransformer3DModel(**transformer)
    return components


def _ltx(i2v: bool, scale: str) -> dict:
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel

    if scale != "tiny":
        raise NotImplementedError("scale='bench' is only available for the 'wan' family")
    latent = 8
    components = {}
    components["transformer"] = LTXVideoTransformer3DModel(
        in_channels=latent, out_channels=latent, patch_size=1, patch_size_t=1,
        num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16, num_layers=2,
        caption_channels=_TEXT_DIM,
    )
    components["vae"] = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=latent,
        block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, False),
        decoder_spatio_temporal_scaling=(True, True, True, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False), upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False, patch_size=4, patch_size_t=1,
        encoder_causal=True, decoder_causal=False,
    )
    # As Lightricks/LTX-Video's scheduler_config.json.
    components["scheduler"] = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.95,
        max_shift=2.05, base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1,
    )
    components["text_encoder"] = _t5_encoder()
    components["tokenizer"] = build_tokenizer()
    return components


def _cogvideox(i2v: bool, scale: str) -> dict:
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler, CogVideoXTransformer3DModel

    if scale != "tiny":
        raise NotImplementedError("scale='bench' is only available for the 'wan' family")
    latent = 4
    components = {}
    components["transformer"] = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16,  # head_dim % 16 == 0 for 3D RoPE
        in_channels=latent * 2 if i2v else latent, out_channels=latent,
        time_embed_dim=8, text_embed_dim=_TEXT_DIM, num_layers=2,
        sample_width=8, sample_height=4, sample_frames=9,  # latent 8x4 -> 64x32 pixels (W x H)
        patch_size=2, patch_size_t=None, temporal_compression_ratio=4, max_text_seq_length=226,
        use_rotary_positional_embeddings=True, use_learned_positional_embeddings=i2v,
    )
    components["vae"] = AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4, up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8), latent_channels=latent, layers_per_block=1,
        norm_num_groups=2, temporal_compression_ratio=4, sample_height=32, sample_width=64,
        scaling_factor=0.7,
    )
    # As THUDM/CogVideoX-5b's scheduler_config.json.
    components["scheduler"] = CogVideoXDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=True, steps_offset=0, prediction_type="v_prediction",
        rescale_betas_zero_snr=True, snr_shift_scale=1.0, timestep_spacing="trailing",
    )
    components["text_encoder"] = _t5_encoder()
    components["tokenizer"] = build_tokenizer()
    return components


# --------------------------------------------------------------------------- new families
# LTX-2 (audio + video), HunyuanVideo 1.5 and Wan 2.2 TI2V 5B: see the second half of the module
# docstring.  Their text encoders (Gemma 3, Qwen2.5-VL + ByT5) and tokenizers are built here too.

_SPECIALS_GEMMA = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")


def build_gemma_tokenizer():
    """A real ``GemmaTokenizer`` (tokenizers BPE with byte fallback, as Gemma 3): a few word pieces,
    single characters and the 256 byte pieces."""
    from transformers import GemmaTokenizer

    vocab = {token: i for i, token in enumerate(_SPECIALS_GEMMA)}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for char in "\u2581" + string.ascii_lowercase + string.digits + string.ascii_uppercase + ".,!?'\"-:;()":
        vocab.setdefault(char, len(vocab))
    merges = []
    for word in ("\u2581a", "\u2581the", "\u2581red", "\u2581kite", "\u2581cat", "\u2581sea"):
        for i in range(2, len(word) + 1):  # left-to-right merges build the word up
            left, right = word[:i - 1], word[i - 1]
            if word[:i] not in vocab:
                vocab[word[:i]] = len(vocab)
                merges.append((left, right))
    return GemmaTokenizer(vocab=vocab, merges=merges)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet (Qwen2's tokenizer uses it)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) \
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[byte] = chr(byte)
        else:
            chars[byte] = chr(256 + extra)
            extra += 1
    return chars


QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_qwen_tokenizer():
    """A real ``Qwen2Tokenizer`` (byte-level BPE) with Qwen's ChatML chat template."""
    from transformers import Qwen2Tokenizer

    vocab = {}
    for char in _bytes_to_unicode().values():
        vocab[char] = len(vocab)
    merges = []
    for word in ("\u0120a", "\u0120the", "\u0120video", "\u0120and", "\u0120of"):
        for i in range(2, len(word) + 1):
            if word[:i] not in vocab:
                vocab[word[:i]] = len(vocab)
                merges.append((word[:i - 1], word[i - 1]))
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


_GEMMA_LAYERS, _GEMMA_DIM = 2, 16


def _gemma3_encoder():
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    text = Gemma3TextConfig(vocab_size=384, hidden_size=_GEMMA_DIM, intermediate_size=32,
                            num_hidden_layers=_GEMMA_LAYERS, num_attention_heads=2, num_key_value_heads=1,
                            head_dim=8, sliding_window=16, max_position_embeddings=2048)
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)
    return Gemma3ForConditionalGeneration(Gemma3Config(text_config=text, vision_config=vision,
                                                       mm_tokens_per_image=1)).eval()


def _ltx2(i2v: bool, scale: str) -> dict:
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler,
                           LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    if scale != "tiny":
        raise NotImplementedError("scale='bench' is only available for the 'wan' family")
    latent, mel_bins, audio_latent = 8, 16, 4
    audio_tokens = audio_latent * mel_bins // 4  # latent channels x latent mel bins (mel compression 4)
    components = {}
    # The real LTX-2 video VAE's layout (patch 4; spatial, temporal, spatiotemporal, spatiotemporal
    # downsamplings; three spatiotemporal upsamplings): x32 spatial, x8 temporal.  Its config states
    # the ratios (the default formula would count every scaling block as both).
    components["vae"] = AutoencoderKLLTX2Video(
        latent_channels=latent, block_out_channels=(8, 8, 16, 16), decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
        spatial_compression_ratio=32, temporal_compression_ratio=8,
    )
    # Audio: 16 kHz mel spectrograms, hop 160, x4 temporal compression -> 25 latents per second, as real.
    components["audio_vae"] = AutoencoderKLLTX2Audio(
        base_channels=audio_tokens, ch_mult=(1, 2, 4), num_res_blocks=1, latent_channels=audio_latent,
        mel_bins=mel_bins, resolution=32, sample_rate=16000, mel_hop_length=160,
    )
    # Upsampling x6 x5 x2 x2 x2 = 240 samples per mel frame: 100 mel frames/s -> 24 kHz, as real.
    components["vocoder"] = LTX2Vocoder(
        in_channels=2 * mel_bins, hidden_channels=32, out_channels=2, resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3, 5]], output_sampling_rate=24000,
    )
    components["transformer"] = LTX2VideoTransformer3DModel(
        in_channels=latent, out_channels=latent, patch_size=1, patch_size_t=1, num_attention_heads=2,
        attention_head_dim=8, cross_attention_dim=16, audio_in_channels=audio_tokens,
        audio_out_channels=audio_tokens, audio_num_attention_heads=2, audio_attention_head_dim=4,
        audio_cross_attention_dim=8, num_layers=2, caption_channels=_GEMMA_DIM,
        rope_double_precision=False, rope_type="split",
    )
    components["connectors"] = LTX2TextConnectors(
        caption_channels=_GEMMA_DIM, text_proj_in_factor=_GEMMA_LAYERS + 1,
        video_connector_num_attention_heads=2, video_connector_attention_head_dim=8,
        video_connector_num_layers=1, video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=8,
        audio_connector_num_layers=1, audio_connector_num_learnable_registers=None,
        connector_rope_base_seq_len=32, rope_double_precision=False, rope_type="split",
    )
    # As Lightricks/LTX-2's scheduler_config.json (dynamic shifting on the token count).
    components["scheduler"] = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05,
        base_image_seq_len=1024, max_image_seq_len=4096, shift_terminal=0.1,
    )
    components["text_encoder"] = _gemma3_encoder()
    components["tokenizer"] = build_gemma_tokenizer()
    return components


def build_ltx2_upsampler(seed: int = 0):
    """A tiny ``LTX2LatentUpsamplerModel`` (x2 spatial) for the tiny LTX-2 VAE's 8 latent channels."""
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LTX2LatentUpsamplerModel(in_channels=8, mid_channels=32, num_blocks_per_stage=1,
                                        use_rational_resampler=False).eval()


def save_ltx2_upsampler(dest: Path, seed: int = 0) -> Path:
    """``save_pretrained`` the tiny upsampler into ``dest`` (a model folder: config.json + weights)."""
    dest = Path(dest)
    build_ltx2_upsampler(seed).save_pretrained(dest)
    return dest


def _hunyuanvideo15(i2v: bool, scale: str) -> dict:
    from diffusers import AutoencoderKLHunyuanVideo15, FlowMatchEulerDiscreteScheduler, HunyuanVideo15Transformer3DModel
    from diffusers.guiders import ClassifierFreeGuidance
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

    if scale != "tiny":
        raise NotImplementedError("scale='bench' is only available for the 'wan' family")
    latent, image_dim = 4, 12
    components = {}
    components["transformer"] = HunyuanVideo15Transformer3DModel(
        in_channels=2 * latent + 1, out_channels=latent, num_attention_heads=2, attention_head_dim=8,
        num_layers=1, num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=16,
        text_embed_2_dim=_TEXT_DIM, image_embed_dim=image_dim, rope_axes_dim=(2, 2, 4), target_size=640,
        task_type="i2v" if i2v else "t2v",
    )
    # The real VAE's compression (x16 spatial, x4 temporal) with tiny widths.
    components["vae"] = AutoencoderKLHunyuanVideo15(
        latent_channels=latent, block_out_channels=(8, 8, 8, 8, 8), layers_per_block=1,
        spatial_compression_ratio=16, temporal_compression_ratio=4,
    )
    components["scheduler"] = FlowMatchEulerDiscreteScheduler(shift=7.0)  # 480p t2v's shift
    components["text_encoder"] = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(
        vocab_size=320, hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
        rope_theta=1000000.0, max_position_embeddings=2048, bos_token_id=None, eos_token_id=None,
    )).eval()
    components["tokenizer"] = build_qwen_tokenizer()
    components["text_encoder_2"] = T5EncoderModel(T5Config(**{**_t5_config_kwargs(), "vocab_size": 384})).eval()
    components["tokenizer_2"] = ByT5Tokenizer()
    components["guider"] = ClassifierFreeGuidance(guidance_scale=6.0)  # the 480p checkpoints' guider
    if i2v:
        from transformers import SiglipVisionConfig, SiglipVisionModel

        try:  # without torchvision, transformers 5 falls back to the PIL backend anyway (with a warning)
            from transformers import SiglipImageProcessorPil as SiglipImageProcessor
        except ImportError:  # pragma: no cover - older transformers
            from transformers import SiglipImageProcessor

        # 729 image tokens as SigLIP so400m (27 x 27 patches), the count the T2V pipeline also assumes.
        components["image_encoder"] = SiglipVisionModel(SiglipVisionConfig(
            hidden_size=image_dim, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
            image_size=54, patch_size=2,
        )).eval()
        components["feature_extractor"] = SiglipImageProcessor(size={"height": 54, "width": 54})
    return components


def _wan22_ti2v(i2v: bool, scale: str) -> dict:
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel

    if scale != "tiny":
        raise NotImplementedError("scale='bench' is only available for the 'wan' family")
    components = {}
    # Wan 2.2's VAE: 48 latent channels, patch 2 on top of x8 -> x16 spatial, x4 temporal.
    components["vae"] = AutoencoderKLWan(
        base_dim=8, z_dim=48, in_channels=12, out_channels=12, is_residual=True, patch_size=2,
        latents_mean=[0.0] * 48, latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
        scale_factor_spatial=16, scale_factor_temporal=4, temperal_downsample=[False, True, True],
    )
    # As Wan-AI/Wan2.2-TI2V-5B-Diffusers: UniPC, flow_shift 5.0 (720p).
    components["scheduler"] = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0, num_train_timesteps=1000,
        solver_order=2, solver_type="bh2", lower_order_final=True,
    )
    components["text_encoder"] = _umt5_encoder()
    components["tokenizer"] = build_tokenizer()
    components["transformer"] = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=48, out_channels=48,
        text_dim=_TEXT_DIM, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024,
    )
    components["transformer_2"] = None
    components["expand_timesteps"] = True  # a pipeline config value, not a module (Wan 2.2 TI2V)
    if i2v:
        components["image_encoder"] = None
        components["image_processor"] = None
    return components


_BUILDERS = {"wan": _wan, "ltx": _ltx, "cogvideox": _cogvideox, "ltx2": _ltx2, "hunyuanvideo15": _hunyuanvideo15,
             "wan22-ti2v": _wan22_ti2v}


def pipeline_class(family: str, *, i2v: bool = False):
    import diffusers

    return getattr(diffusers, PIPELINE_CLASS_NAMES[(family, bool(i2v))])


def build_pipeline(family: str, *, i2v: bool = False, seed: int = 0, scale: str = "tiny"):
    """Build an in-memory pipeline with random weights, fully determined by ``seed``.

    The global torch RNG state is left untouched.
    """
    if family not in ALL_FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {ALL_FAMILIES}")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {SCALES}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        components = _BUILDERS[family](bool(i2v), scale)
    pipe = pipeline_class(family, i2v=i2v)(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_pipeline(family: str, dest: Path, *, i2v: bool = False, seed: int = 0, scale: str = "tiny") -> Path:
    """``save_pretrained`` a freshly built pipeline into ``dest`` (created if needed); return ``dest``."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    build_pipeline(family, i2v=i2v, seed=seed, scale=scale).save_pretrained(dest)
    return dest


def build_v2v(t2v_pipe):
    """The family's video-to-video pipeline on ``t2v_pipe``'s own modules (no copy, no cast)."""
    import inspect

    import diffusers

    family = next(f for (f, i2v), name in PIPELINE_CLASS_NAMES.items()
                  if not i2v and name == type(t2v_pipe).__name__ and f in V2V_CLASS_NAMES)
    cls = getattr(diffusers, V2V_CLASS_NAMES[family])
    wanted = inspect.signature(cls.__init__).parameters
    components = {k: v for k, v in t2v_pipe.components.items() if k in wanted}
    scheduler = components["scheduler"]
    if family == "ltx" and scheduler.config.get("use_dynamic_shifting"):
        components["scheduler"] = type(scheduler).from_config(scheduler.config, use_dynamic_shifting=False)
    pipe = cls(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_colour_video(path: Path, colours, *, width: int = 96, height: int = 64, fps: int = 16) -> Path:
    """An H.264 MP4 whose frame i is a solid ``colours[i]`` (sorakit's own encoder)."""
    import numpy as np

    from sorakit.media.encode import encode_mp4

    frames = [np.full((height, width, 3), colour, dtype=np.uint8) for colour in colours]
    encode_mp4(frames, Path(path), width=width, height=height, fps=fps)
    return Path(path)


def nearest_colour(frame, colours=COLOURS) -> int:
    """The index of the colour in ``colours`` closest to ``frame``'s mean (HxWx3, PIL or array)."""
    import numpy as np

    mean = np.asarray(frame, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    return int(np.argmin([np.linalg.norm(mean - np.asarray(c, dtype=np.float64)) for c in colours]))
