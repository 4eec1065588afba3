"""GPU benchmark: seconds per denoising step of the full-size Wan 2.1 T2V 1.3B transformer.

Issue text: "a GPU script, ready for a machine with one, that times seconds per denoising step for
the full-size Wan 2.1 1.3B architecture with random weights at 832x480, 81 frames, bf16, with and
without torch.compile".

What it does:

1. Builds ``WanTransformer3DModel`` with the config of Wan-AI/Wan2.1-T2V-1.3B-Diffusers
   (``transformer/config.json``: 30 layers, 12 heads x 128, ffn 8960, text_dim 4096, patch
   (1, 2, 2), ...) directly on the device with random weights -- nothing is downloaded -- and casts
   it the way ``from_pretrained(dtype=...)`` does: the class's ``_keep_in_fp32_modules`` (time
   embedder, norms, scale/shift tables, RoPE) stay float32, the rest takes ``--dtype``. (``--tiny``
   checks that layout against a real ``from_pretrained`` round trip.)
2. Inputs as ``WanPipeline`` makes them for ``--width x --height``, ``--frames``: float32 latents
   (1, 16, (frames - 1) / 4 + 1, height / 8, width / 8) -- 21 x 60 x 104 for 81 frames at 832x480,
   i.e. 32,760 tokens after the (1, 2, 2) patch -- cast to the transformer's dtype per call, random
   (1, 512, 4096) prompt and negative-prompt embeddings, timesteps and ``scheduler.step`` from the
   Wan scheduler (UniPC, flow prediction, flow_shift 3.0, 50 steps).
3. One denoising step = what the pipeline's loop does with CFG: a "cond" and an "uncond" forward
   (inside ``cache_context`` as the pipeline calls them), the guidance combine (scale 5.0) and
   ``scheduler.step``. Per variant: warm-up steps, then ``--steps`` timed steps, each bracketed by
   ``synchronize``; the two forwards are timed on their own too. Also a single batched-2 forward
   (cond and uncond in one batch, what a batched-CFG pipeline would do) -- not what WanPipeline
   does, for comparison.
4. Variants: eager, then ``torch.compile(transformer)`` (as the engine's ``compile = true``
   does); the compile variant reports its first call (trace + compile + run) separately.
   ``--regional`` adds diffusers' ``compile_repeated_blocks()`` (compiles one block class, much
   faster to compile). Peak memory is ``torch.cuda.max_memory_allocated`` per variant.

Progress is printed as it goes; ``--out FILE`` also writes the results as JSON. A FLOP estimate
(matmuls and attention only) gives an approximate achieved TFLOP/s.

Without CUDA the script exits with status 2 and says so; ``--device cpu --tiny`` runs a
scaled-down smoke version (2 layers, 2 x 32 heads, 64x64, 9 frames) to check the script itself.

GPU run (one H200: ~3-5 min in all, most of it the cold torch.compile):
    python benchmarks/gpu_wan_step.py --out wan_step.json
Smoke run here:
    .venv/bin/python benchmarks/gpu_wan_step.py --device cpu --tiny
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers, transformer/config.json
WAN_1_3B = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
    out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None,
    rope_max_seq_len=1024,
)
TINY = {**WAN_1_3B, "num_attention_heads": 2, "attention_head_dim": 32, "ffn_dim": 128,
        "num_layers": 2, "text_dim": 64}
TEXT_LEN = 512  # WanPipeline's default max_sequence_length: prompt embeddings are padded to it
GUIDANCE = 5.0
SCHEDULE_STEPS = 50
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (with --tiny)")
    p.add_argument("--tiny", action="store_true", help="scaled-down smoke version (2 layers, small latent)")
    p.add_argument("--force", action="store_true", help="allow the full-size model on the CPU (hours)")
    p.add_argument("--steps", type=int, default=None, help="timed denoising steps per variant (5; tiny 2)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing, per variant")
    p.add_argument("--frames", type=int, default=None, help="video frames, 4k+1 (81; tiny 9)")
    p.add_argument("--height", type=int, default=None, help="pixels, multiple of 16 (480; tiny 64)")
    p.add_argument("--width", type=int, default=None, help="pixels, multiple of 16 (832; tiny 64)")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--no-compile", action="store_true", help="eager only")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode (default: torch's default; e.g. max-autotune-no-cudagraphs)")
    p.add_argument("--regional", action="store_true",
                   help="also time compile_repeated_blocks() (regional compile)")
    p.add_argument("--no-batched", action="store_true", help="skip the batched-2 forward")
    p.add_argument("--compile-batched", action="store_true",
                   help="also time the batched-2 forward compiled (a second compile for the new shape)")
    p.add_argument("--budget", type=float, default=420.0,
                   help="seconds; optional parts (regional, compiled batched) are skipped past it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    o = p.parse_args(argv)
    o.steps = o.steps if o.steps is not None else (2 if o.tiny else 5)
    o.frames = o.frames if o.frames is not None else (9 if o.tiny else 81)
    o.height = o.height if o.height is not None else (64 if o.tiny else 480)
    o.width = o.width if o.width is not None else (64 if o.tiny else 832)
    return o


def fail(msg: str) -> None:
    print(f"gpu_wan_step: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


def check_args(o, torch) -> None:
    if o.device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"CUDA is not available (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
             "this script times a GPU. Run it on a machine with an NVIDIA GPU and a CUDA build of torch, "
             "or check the script itself with: --device cpu --tiny")
    if o.device == "cpu" and not o.tiny and not o.force:
        fail("the full-size model on the CPU would take hours per step: pass --tiny (or --force)")
    if o.height % 16 or o.width % 16:
        fail(f"height and width must be multiples of 16 (VAE x8, patch x2); got {o.width}x{o.height}")
    if o.frames < 1 or (o.frames - 1) % 4:
        fail(f"frames must be 4k+1 (Wan's VAE compresses time x4); got {o.frames}")
    if o.steps < 1 or o.warmup < 0:
        fail("--steps must be >= 1 and --warmup >= 0")


# --------------------------------------------------------------------------- model

def keeps_fp32(name: str, keep: list[str]) -> bool:
    """``from_pretrained``'s rule (diffusers model_loading_utils): any dotted part of the name."""
    return any(part in keep for part in name.split("."))


def cast_like_from_pretrained(model, dtype, torch):
    keep = list(getattr(model, "_keep_in_fp32_modules", None) or [])
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.is_floating_point():
                param.data = param.data.to(torch.float32 if keeps_fp32(name, keep) else dtype)
        for mod_name, module in model.named_modules():
            for buf_name, buf in list(module.named_buffers(recurse=False)):
                if buf is not None and buf.is_floating_point():
                    full = f"{mod_name}.{buf_name}" if mod_name else buf_name
                    module._buffers[buf_name] = buf.to(torch.float32 if keeps_fp32(full, keep) else dtype)
    return model.eval().requires_grad_(False)


def build_transformer(config: dict, device, dtype, seed: int, torch):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    with torch.device(device):
        model = WanTransformer3DModel(**config)
    return cast_like_from_pretrained(model, dtype, torch)


def dtype_layout(model) -> dict[str, str]:
    found = {n: str(p.dtype) for n, p in model.named_parameters()}
    found.update({"buffer:" + n: str(b.dtype) for n, b in model.named_buffers()})
    return found


def check_layout_against_from_pretrained(config: dict, dtype, torch) -> bool:
    """Tiny only: save a model, load it with from_pretrained(dtype=...), compare per-tensor dtypes."""
    from diffusers import WanTransformer3DModel

    ours = build_transformer(config, "cpu", dtype, 0, torch)
    with tempfile.TemporaryDirectory() as tmp:
        WanTransformer3DModel(**config).save_pretrained(tmp)
        theirs = WanTransformer3DModel.from_pretrained(tmp, dtype=dtype)
    a, b = dtype_layout(ours), dtype_layout(theirs)
    if a != b:
        diff = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
        log(f"dtype layout differs from from_pretrained: {dict(list(diff.items())[:8])}")
    return a == b


def count_params(config: dict, torch) -> int:
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        return sum(p.numel() for p in WanTransformer3DModel(**config).parameters())


def forward_flops(config: dict, tokens: int, text_len: int, batch: int = 1) -> float:
    """Matmul + attention FLOPs of one forward (norms, RoPE, element-wise ops left out)."""
    dim = config["num_attention_heads"] * config["attention_head_dim"]
    per_layer = (2 * tokens * (4 * dim * dim + 2 * dim * dim + 2 * dim * config["ffn_dim"])  # projections, ffn
                 + 2 * text_len * 2 * dim * dim                                             # cross-attn K, V
                 + 4 * tokens * tokens * dim                                                # self-attn QK^T, AV
                 + 4 * tokens * text_len * dim)                                             # cross-attn
    in_out = 2 * tokens * dim * (config["in_channels"] + config["out_channels"]) * math.prod(config["patch_size"])
    text = 2 * text_len * (config["text_dim"] * dim + dim * dim)
    return batch * (config["num_layers"] * per_layer + in_out + text)


# --------------------------------------------------------------------------- timing

class Bench:
    def __init__(self, o, torch, config: dict) -> None:
        from diffusers import UniPCMultistepScheduler

        self.o, self.torch, self.config = o, torch, config
        self.device = torch.device(o.device)
        self.cuda = self.device.type == "cuda"
        self.dtype = getattr(torch, o.dtype)
        lat_f, lat_h, lat_w = (o.frames - 1) // 4 + 1, o.height // 8, o.width // 8
        self.latent_shape = (1, config["in_channels"], lat_f, lat_h, lat_w)
        p_t, p_h, p_w = config["patch_size"]
        self.tokens = (lat_f // p_t) * (lat_h // p_h) * (lat_w // p_w)
        self.text_len = TEXT_LEN if not o.tiny else 32
        g = torch.Generator("cpu").manual_seed(o.seed)
        self.latents0 = torch.randn(self.latent_shape, generator=g).to(self.device)
        text_shape = (1, self.text_len, config["text_dim"])
        self.prompt = torch.randn(text_shape, generator=g).to(self.device, self.dtype)
        self.negative = torch.randn(text_shape, generator=g).to(self.device, self.dtype)
        # As Wan-AI/Wan2.1-T2V-1.3B-Diffusers' scheduler_config.json (and tests/tiny_pipelines.py).
        self.scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
            num_train_timesteps=1000, solver_order=2, solver_type="bh2", lower_order_final=True)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gib(self) -> float | None:
        return self.torch.cuda.max_memory_allocated(self.device) / 2**30 if self.cuda else None

    def _forward(self, model, latents, t, embeds, name: str, i: int):
        ctx = (model.cache_context(name, step_index=i, sigma=float(self.scheduler.sigmas[i]),
                                   num_inference_steps=SCHEDULE_STEPS)
               if hasattr(model, "cache_context") else contextlib.nullcontext())
        with ctx:
            return model(hidden_states=latents.to(self.dtype), timestep=t.expand(latents.shape[0]),
                         encoder_hidden_states=embeds, return_dict=False)[0]

    def steps(self, model, n_warmup: int, n_timed: int, label: str) -> dict:
        """Run the pipeline's CFG loop body; time each step and each forward."""
        torch = self.torch
        self.scheduler.set_timesteps(SCHEDULE_STEPS, device=self.device)
        self.scheduler.set_begin_index(0)
        timesteps = self.scheduler.timesteps
        latents = self.latents0.clone()
        step_s, fwd_s = [], []
        with torch.no_grad():
            for i in range(n_warmup + n_timed):
                t = timesteps[i]
                self.sync()
                t0 = time.perf_counter()
                cond = self._forward(model, latents, t, self.prompt, "cond", i)
                self.sync()
                t1 = time.perf_counter()
                uncond = self._forward(model, latents, t, self.negative, "uncond", i)
                self.sync()
                t2 = time.perf_counter()
                noise = uncond + GUIDANCE * (cond - uncond)
                latents = self.scheduler.step(noise, t, latents, return_dict=False)[0]
                self.sync()
                t3 = time.perf_counter()
                kind = "warm-up" if i < n_warmup else "timed"
                log(f"{label}: {kind} step {i + 1}/{n_warmup + n_timed}: {t3 - t0:.3f} s "
                    f"(forwards {t1 - t0:.3f} + {t2 - t1:.3f})")
                if i >= n_warmup:
                    step_s.append(t3 - t0)
                    fwd_s += [t1 - t0, t2 - t1]
        if not torch.isfinite(latents).all():
            log(f"{label}: note: non-finite latents (random weights) -- timings still hold")
        return {"s_per_step": stats(step_s), "s_per_forward": stats(fwd_s)}

    def batched(self, model, n_warmup: int, n_timed: int, label: str) -> dict:
        torch = self.torch
        self.scheduler.set_timesteps(SCHEDULE_STEPS, device=self.device)
        t = self.scheduler.timesteps[0]
        latents = torch.cat([self.latents0, self.latents0])
        embeds = torch.cat([self.prompt, self.negative])
        times = []
        with torch.no_grad():
            for i in range(n_warmup + n_timed):
                self.sync()
                t0 = time.perf_counter()
                out = self._forward(model, latents, t, embeds, "batched", 0)
                cond, uncond = out.chunk(2)
                _ = uncond + GUIDANCE * (cond - uncond)
                self.sync()
                dt = time.perf_counter() - t0
                log(f"{label}: {'warm-up' if i < n_warmup else 'timed'} batched-2 forward "
                    f"{i + 1}/{n_warmup + n_timed}: {dt:.3f} s")
                if i >= n_warmup:
                    times.append(dt)
        return {"s_per_batched2_forward": stats(times)}

    def first_call(self, model, label: str) -> float:
        """The first call of a compiled model: trace + compile + one run (one forward)."""
        self.scheduler.set_timesteps(SCHEDULE_STEPS, device=self.device)
        self.sync()
        t0 = time.perf_counter()
        with self.torch.no_grad():
            self._forward(model, self.latents0, self.scheduler.timesteps[0], self.prompt, "cond", 0)
        self.sync()
        dt = time.perf_counter() - t0
        log(f"{label}: first call (compile + 1 forward) {dt:.1f} s")
        return dt


def stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values),
            "all": [round(v, 5) for v in values]}


def run_variant(bench: Bench, model, label: str, o, *, compiled_from=None, do_batched: bool) -> dict:
    result: dict = {}
    bench.reset_peak()
    if compiled_from is not None:
        result["compile_first_call_s"] = bench.first_call(model, label)
    result.update(bench.steps(model, o.warmup, o.steps, label))
    if do_batched:
        result.update(bench.batched(model, 1, max(2, o.steps // 2), label))
    result["peak_memory_gib"] = bench.peak_gib()
    return result


def main(argv=None) -> int:
    o = parse_args(argv)
    import torch

    check_args(o, torch)
    import diffusers
    from diffusers.utils import logging as dlogging

    dlogging.set_verbosity_error()
    config = TINY if o.tiny else WAN_1_3B
    dtype = getattr(torch, o.dtype)
    device = torch.device(o.device)
    env = {"torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
           "device": o.device, "cuda": torch.version.cuda,
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
           "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["flash_sdp_enabled"] = torch.backends.cuda.flash_sdp_enabled()
    n_params = count_params(config, torch)
    log(f"Wan 2.1 T2V {'TINY (smoke) ' if o.tiny else '1.3B '}transformer: {n_params / 1e6:.1f}M parameters, "
        f"{config['num_layers']} layers, {config['num_attention_heads']}x{config['attention_head_dim']} heads; "
        f"{o.width}x{o.height}, {o.frames} frames, {o.dtype}, on {env['gpu'] or o.device}")
    results: dict = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
                     "params": n_params, "args": {k: str(v) if isinstance(v, Path) else v
                                                  for k, v in vars(o).items()},
                     "env": env, "variants": {}, "skipped": []}

    if o.tiny:
        results["dtype_layout_matches_from_pretrained"] = ok = \
            check_layout_against_from_pretrained(config, dtype, torch)
        log(f"dtype layout (fp32 keep-modules) matches from_pretrained(dtype={o.dtype}): {ok}")

    t = time.perf_counter()
    model = build_transformer(config, device, dtype, o.seed, torch)
    bench = Bench(o, torch, config)
    if bench.cuda:
        torch.cuda.synchronize(device)
    results["build_s"] = time.perf_counter() - t
    results["weights_gib"] = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    results["latent_shape"] = list(bench.latent_shape)
    results["tokens"] = bench.tokens
    results["text_len"] = bench.text_len
    flops = forward_flops(config, bench.tokens, bench.text_len)
    results["est_tflop_per_forward"] = flops / 1e12
    log(f"built on {o.device} in {results['build_s']:.1f} s ({results['weights_gib']:.2f} GiB of weights); "
        f"latents {tuple(bench.latent_shape)} -> {bench.tokens} tokens, text {bench.text_len} tokens; "
        f"~{flops / 1e12:.1f} TFLOP per forward")
    write(o, results)

    do_batched = not o.no_batched
    results["variants"]["eager"] = run_variant(bench, model, "eager", o, do_batched=do_batched)
    write(o, results)

    if not o.no_compile:
        guarded(results, "compile", lambda: run_variant(
            bench, torch.compile(model, mode=o.compile_mode), "compile", o, compiled_from=model,
            do_batched=do_batched and o.compile_batched and within_budget(o, results, "compiled batched-2")))
        write(o, results)
        if o.regional and within_budget(o, results, "regional compile"):
            def regional() -> dict:
                t = time.perf_counter()
                model.compile_repeated_blocks(mode=o.compile_mode)  # compiles the blocks in place
                log(f"regional: compile_repeated_blocks() set up in {time.perf_counter() - t:.1f} s")
                return run_variant(bench, model, "regional", o, compiled_from=model, do_batched=False)

            guarded(results, "regional", regional)
            write(o, results)
    results["total_s"] = time.perf_counter() - T0
    write(o, results)
    report(results, flops)
    return 1 if any("error" in r for r in results["variants"].values()) else 0


def guarded(results: dict, name: str, run) -> None:
    """A compile failure (no compiler, an inductor bug) is recorded; the eager figures stand."""
    try:
        results["variants"][name] = run()
    except Exception as exc:  # noqa: BLE001 - reported, and the exit status says so
        results["variants"][name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        log(f"{name}: FAILED: {type(exc).__name__}: {str(exc)[:500]}")


def within_budget(o, results: dict, what: str) -> bool:
    if time.perf_counter() - T0 < o.budget:
        return True
    results["skipped"].append(f"{what}: past --budget {o.budget:g} s")
    log(f"skipping {what}: past --budget {o.budget:g} s")
    return False


def write(o, results: dict) -> None:
    if o.out:
        o.out.parent.mkdir(parents=True, exist_ok=True)
        o.out.write_text(json.dumps(results, indent=2) + "\n")


def report(results: dict, flops: float) -> None:
    print()
    print(f"{'variant':<10} {'s/step mean':>11} {'s/step min':>10} {'s/fwd mean':>10} {'batched-2 s':>11} "
          f"{'compile s':>9} {'peak GiB':>8} {'~TFLOP/s':>8}")
    eager = results["variants"].get("eager", {}).get("s_per_step", {}).get("min")
    for name, r in results["variants"].items():
        if "error" in r:
            print(f"{name:<10} failed: {r['error'][:200]}")
            continue
        b = r.get("s_per_batched2_forward", {}).get("min")
        fwd = r["s_per_forward"]["mean"]
        peak = r.get("peak_memory_gib")
        comp = r.get("compile_first_call_s")
        cells = [f"{b:.3f}" if b else "-", f"{comp:.1f}" if comp is not None else "-",
                 f"{peak:.2f}" if peak is not None else "-"]
        print(f"{name:<10} {r['s_per_step']['mean']:>11.3f} {r['s_per_step']['min']:>10.3f} {fwd:>10.3f} "
              f"{cells[0]:>11} {cells[1]:>9} {cells[2]:>8} {flops / fwd / 1e12:>8.1f}")
    for name, r in results["variants"].items():
        if name != "eager" and eager and "error" not in r:
            print(f"{name}: speed-up over eager (best s/step) {eager / r['s_per_step']['min']:.2f}x")
    print("s/step = 2 forwards (cond + uncond, as WanPipeline with CFG) + guidance + scheduler.step; "
          "batched-2 = both in one forward. 50 steps ~ 50 x s/step (+ text encoder and VAE decode).")
    for note in results["skipped"]:
        print(f"skipped: {note}")
    print(f"total {results['total_s']:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
