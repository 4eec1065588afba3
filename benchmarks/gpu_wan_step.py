"""GPU benchmark: sorakit's speed switches on Wan 2.1 T2V 1.3B against stock diffusers, with a quality check.

One command, for a machine with a GPU (a lent one: nothing is downloaded):

    python benchmarks/gpu_wan_step.py                                 # random weights, full-size 1.3B
    python benchmarks/gpu_wan_step.py --model-path /models/Wan2.1-T2V-1.3B-Diffusers   # real weights
    python benchmarks/gpu_wan_step.py --device cpu --tiny             # a few seconds on a CPU: checks the script

What it runs, all at the same shape (default 832x480, 81 frames, 20 steps, guidance 5.0, bf16) and seed:

1. ``stock``: the pipeline as diffusers gives it: ``DiffusionPipeline.from_pretrained(path, dtype)``,
   ``.to(device)``, called with the very arguments sorakit's engine passes (``call_arguments``), and
   the frames turned to uint8 the same way. No sorakit code runs in its timed part.
2. ``off``: sorakit's engine (``DiffusersEngine.render``: step hook, progress, cancellation checks)
   with every switch off -- its frames must equal stock's (PSNR inf), its time shows the overhead.
3. One variant per switch, each on a fresh engine (``[models.bench]`` table = ``off`` + the switch):
   ``compile = "repeated_blocks"``, ``compile = "full"``, each attention backend whose kernel is
   installed (diffusers' own requirement check; ``--all-backends`` adds flex and the slow ones), each
   cache (``first_block``, ``taylorseer``, ``pab``, ``magcache`` with ratios calibrated here on this
   shape first, and ``faster_cache``, which sorakit refuses for Wan: the row shows the reason), and
   ``compile = "repeated_blocks"`` + ``first_block`` together.

Per variant: the load (from_pretrained, placement, switches, compile and warm-up, as a worker's first
task pays it), the first run after it (what the first user waits), then ``--repeat`` runs: end-to-end
seconds (best), seconds per denoising step (median of the steps after the first; each step is
bracketed by a device sync in the progress callback), peak memory, and the frames' PSNR and SSIM
(numpy, Gaussian 11x11 window, sigma 1.5, on luma, mean over frames) against the ``off`` run. The
table prints each variant's speed-up against ``stock`` (stock seconds / variant seconds).

Without ``--model-path`` the weights are random: a full-size Wan 2.1 1.3B transformer (30 layers,
12x128 heads, ffn 8960, as Wan-AI/Wan2.1-T2V-1.3B-Diffusers' transformer/config.json), the Wan 2.1
VAE architecture (diffusers' AutoencoderKLWan defaults) and a one-layer text encoder with 4096-wide
outputs (the prompt encoder's time is negligible either way); it is saved to a temporary directory
and both stock and sorakit load it from there. Timings hold; the quality columns then compare noise
(caches that skip work change it visibly): pass ``--model-path`` for meaningful PSNR/SSIM.
``--tiny`` builds the same pipeline at toy size (2 layers, 64x64, 9 frames, 4 steps); compile is
skipped there unless ``--compile`` (it takes 20-60 s per variant on a CPU).

``--out FILE`` also writes the results as JSON. A run on one H200 with the defaults: about 6-9
minutes, most of it the two cold compiles; ``--skip compile`` (or ``--only``) trims it.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import gc
import io
import json
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tiny_pipelines: the tokenizer, the small T5 config

# Wan-AI/Wan2.1-T2V-1.3B-Diffusers, transformer/config.json
WAN_1_3B = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
    out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, image_dim=None, added_kv_proj_dim=None,
    rope_max_seq_len=1024,
)
TINY = {**WAN_1_3B, "num_attention_heads": 2, "attention_head_dim": 32, "ffn_dim": 128, "num_layers": 2,
        "text_dim": 64}
TINY_VAE = dict(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1, z_dim=16, temperal_downsample=[False, True, True])
PROMPT = ("A red kite dances over a grey sea at sunset, the camera slowly follows it along the beach, "
          "waves rolling in, cinematic light")
#: attention backends tried on a GPU (those whose kernel is installed run); flex and the math kernel are
#: slow without compile and only run with --all-backends; the *_hub ones download kernels: never here
GPU_BACKENDS = ("_native_flash", "_native_cudnn", "_native_efficient", "flash", "flash_varlen", "_flash_3",
                "_flash_varlen_3", "sage", "sage_varlen", "xformers")
SLOW_BACKENDS = ("flex", "_native_math")
CPU_BACKENDS = ("_native_flash", "_native_math")
T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (with --tiny)")
    p.add_argument("--tiny", action="store_true", help="toy-size random pipeline: checks the script in seconds")
    p.add_argument("--model-path", default=None, help="a diffusers Wan checkpoint (directory or cached hub id)")
    p.add_argument("--family", default="wan", help="sorakit family of --model-path (wan, wan22-ti2v, ...)")
    p.add_argument("--width", type=int, default=None, help="pixels (832; tiny 64)")
    p.add_argument("--height", type=int, default=None, help="pixels (480; tiny 64)")
    p.add_argument("--frames", type=int, default=None, help="4k+1 (81; tiny 9)")
    p.add_argument("--fps", type=int, default=16)
    p.add_argument("--steps", type=int, default=None, help="denoising steps (20; tiny 4)")
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--dtype", default=None, choices=("bfloat16", "float16", "float32"), help="bfloat16; tiny float32")
    p.add_argument("--repeat", type=int, default=None, help="timed runs per variant after the first (2; tiny 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="with --tiny: include the compile variants")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode for the compile variants")
    p.add_argument("--all-backends", action="store_true", help="also flex and the math kernel")
    p.add_argument("--skip", action="append", default=[], help="skip variants whose name contains this (repeatable)")
    p.add_argument("--only", action="append", default=[], help="run only variants whose name contains this")
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    o = p.parse_args(argv)
    o.width = o.width or (64 if o.tiny else 832)
    o.height = o.height or (64 if o.tiny else 480)
    o.frames = o.frames or (9 if o.tiny else 81)
    o.steps = o.steps or (4 if o.tiny else 20)
    o.dtype = o.dtype or ("float32" if o.tiny else "bfloat16")
    o.repeat = o.repeat if o.repeat is not None else (1 if o.tiny else 2)
    return o


def fail(msg: str) -> None:
    print(f"gpu_wan_step: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


# -- quality ------------------------------------------------------------------------------------------

def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio of two uint8 videos, in dB (inf when identical)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def _gaussian(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size) - (size - 1) / 2
    k = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return k / k.sum()


def _filter(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of (..., H, W) with the 1-D kernel ``k``."""
    from numpy.lib.stride_tricks import sliding_window_view

    rows = sliding_window_view(img, len(k), axis=-2) @ k
    return sliding_window_view(rows, len(k), axis=-1) @ k


def luma(video: np.ndarray) -> np.ndarray:
    v = video.astype(np.float64)
    return 0.299 * v[..., 0] + 0.587 * v[..., 1] + 0.114 * v[..., 2]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03) of two uint8
    videos (N, H, W, 3), on luma; 1.0 when identical. Frames smaller than the window use a smaller one."""
    x, y = luma(a), luma(b)
    size = min(11, x.shape[-2], x.shape[-1])
    size -= (size + 1) % 2  # odd
    k = _gaussian(size, 1.5 * size / 11)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = _filter(x, k), _filter(y, k)
    sxx = _filter(x * x, k) - mu_x ** 2
    syy = _filter(y * y, k) - mu_y ** 2
    sxy = _filter(x * y, k) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return float(s.mean())


# -- the pipeline ---------------------------------------------------------------------------------------

def build_random_wan(dest: Path, tiny: bool, dtype, device, seed: int) -> Path:
    """A Wan 2.1 T2V pipeline with random weights (full-size 1.3B transformer and Wan 2.1 VAE, or toy
    size), saved to ``dest`` as a normal diffusers checkpoint."""
    import torch
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from tiny_pipelines import _t5_config_kwargs, build_tokenizer
    from transformers import UMT5Config, UMT5EncoderModel

    config = TINY if tiny else WAN_1_3B
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(device):
            transformer = WanTransformer3DModel(**config).to(dtype)
            vae = AutoencoderKLWan(**(TINY_VAE if tiny else {}))
        text = {**_t5_config_kwargs(), "d_model": config["text_dim"], "d_kv": 16, "num_heads": 4, "d_ff": 64,
                "num_layers": 1}
        text_encoder = UMT5EncoderModel(UMT5Config(**text)).eval()
    # As Wan-AI/Wan2.1-T2V-1.3B-Diffusers' scheduler_config.json.
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                        num_train_timesteps=1000, solver_order=2, solver_type="bh2",
                                        lower_order_final=True)
    pipe = WanPipeline(tokenizer=build_tokenizer(), text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=transformer)
    pipe.save_pretrained(dest)
    del pipe, transformer, vae, text_encoder
    return dest


class Bench:
    def __init__(self, o, torch, path: str, weights_dir: Path) -> None:
        self.o, self.torch, self.path, self.weights_dir = o, torch, path, weights_dir
        self.cuda = o.device.startswith("cuda")
        self.reference: np.ndarray | None = None  # the "off" run's frames

    # -- sorakit ------------------------------------------------------------------------------
    def table(self, **switches) -> dict:
        o = self.o
        return {"family": o.family, "path": self.path, "dtype": o.dtype, "device": o.device, "steps": o.steps,
                "guidance": o.guidance, "fps": o.fps, "resolution": {"small": [o.width, o.height]},
                "max_frames": o.frames, **switches}

    def engine(self, **switches):
        from sorakit.engines.diffusers_engine import DiffusersEngine
        from sorakit.engines.models import parse_spec

        return DiffusersEngine(parse_spec("bench", self.table(**switches)), self.weights_dir)

    def job(self):
        from sorakit.engines import RenderJob

        o = self.o
        return RenderJob("bench", PROMPT, o.width, o.height, o.frames, o.fps, seed=o.seed,
                         params={"num_inference_steps": o.steps, "guidance_scale": o.guidance})

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / 2 ** 30 if self.cuda else None

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def timed_run(self, run) -> tuple[np.ndarray, float, list[float]]:
        """``run(on_step)`` -> frames; returns frames, end-to-end seconds and each step's end time."""
        stamps: list[float] = []

        def on_step() -> None:
            self.sync()
            stamps.append(time.perf_counter())

        self.sync()
        start = time.perf_counter()
        frames = run(on_step)
        self.sync()
        end = time.perf_counter()
        return frames, end - start, [start, *stamps]

    def measure(self, name: str, load, run) -> dict:
        """Load (timed), one first run, then ``--repeat`` timed runs; the frames' quality vs ``off``."""
        self.reset_peak()
        self.sync()
        t = time.perf_counter()
        loaded = load()
        self.sync()
        result: dict = {"load_s": time.perf_counter() - t}
        frames, first, _ = self.timed_run(lambda on_step: run(loaded, on_step))
        result["first_run_s"] = first
        e2e, steps = [], []
        for _ in range(self.o.repeat):
            frames, seconds, stamps = self.timed_run(lambda on_step: run(loaded, on_step))
            e2e.append(seconds)
            gaps = np.diff(stamps)[1:self.o.steps]  # the steps after the first (which also encodes the prompt)
            steps += list(gaps) if len(gaps) else list(np.diff(stamps)[:1])
        if not e2e:  # --repeat 0: the first run is all there is
            e2e = [first]
        result.update(e2e_s=min(e2e), e2e_all=[round(x, 4) for x in e2e],
                      s_per_step=statistics.median(steps) if steps else None, peak_gib=self.peak_gib(),
                      frames_shape=list(frames.shape))
        if name == "off":
            self.reference = frames
        if self.reference is not None:
            result["psnr_db"] = psnr(frames, self.reference)
            result["ssim"] = ssim(frames, self.reference)
        result["_frames"] = frames
        log(f"{name}: load {result['load_s']:.1f} s, first run {first:.2f} s, best {result['e2e_s']:.2f} s, "
            f"{result['s_per_step'] or 0:.3f} s/step"
            + (f", PSNR {result['psnr_db']:.1f} dB, SSIM {result['ssim']:.4f}" if "psnr_db" in result else ""))
        return result

    def sorakit(self, name: str, **switches) -> dict:
        engine_box = {}

        def load():
            engine = self.engine(**switches)
            engine.pipeline()  # what a worker's first task pays: load, switches, compile, warm-up
            engine_box["engine"] = engine
            return engine

        def run(engine, on_step):
            ctx = Ctx(on_step)
            return engine.render(self.job(), ctx)

        result = self.measure(name, load, run)
        applied = getattr(engine_box.get("engine"), "_speed_applied", {}) or {}
        result["warmup_s"] = applied.get("warmup_s")
        result["switches"] = switches
        engine_box.clear()
        self.free()
        return result

    # -- stock diffusers ----------------------------------------------------------------------
    def stock(self) -> dict:
        import diffusers

        torch, o = self.torch, self.o
        args = self.engine().call_arguments(self.job())  # the very arguments sorakit passes

        def load():
            pipe = diffusers.DiffusionPipeline.from_pretrained(self.path, dtype=getattr(torch, o.dtype))
            pipe.to(o.device)
            pipe.set_progress_bar_config(disable=True)
            return pipe

        def run(pipe, on_step):
            def callback(_pipe, _i, _t, kwargs):
                on_step()
                return kwargs

            call = {**args, "generator": torch.Generator("cpu").manual_seed(o.seed)}
            video = pipe(**call, callback_on_step_end=callback).frames[0]
            return (np.clip(np.asarray(video, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)[:o.frames]

        result = self.measure("stock", load, run)
        self.free()
        return result

    def calibrate_magcache(self) -> list[float] | None:
        """MagCache's ratios for this model, shape and step count (its calibration mode, on diffusers)."""
        import diffusers
        from diffusers.hooks import MagCacheConfig

        torch, o = self.torch, self.o
        pipe = diffusers.DiffusionPipeline.from_pretrained(self.path, dtype=getattr(torch, o.dtype)).to(o.device)
        pipe.set_progress_bar_config(disable=True)
        pipe.transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=o.steps))
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            args = self.engine().call_arguments(self.job())
            pipe(**{**args, "generator": torch.Generator("cpu").manual_seed(o.seed)})
        del pipe
        self.free()
        for line in printed.getvalue().splitlines():
            if line.startswith("[") and line.rstrip().endswith("]") and "," in line:
                return [float(x) for x in ast.literal_eval(line.strip())]
        return None


class Ctx:
    """The engine's render context: each progress report after a scheduler step is a step's end."""

    def __init__(self, on_step) -> None:
        self.on_step, self.last = on_step, None

    def progress(self, fraction: float) -> None:
        if fraction != self.last and fraction < 1.0:
            self.last = fraction
            self.on_step()

    def check_cancel(self) -> None:
        pass

    def audio(self, track) -> None:
        pass


# -- the variants ---------------------------------------------------------------------------------

def variants(o, torch) -> list[tuple[str, dict]]:
    """(name, switches) for sorakit's runs after ``off``."""
    from diffusers.models import attention_dispatch as dispatch

    found: list[tuple[str, dict]] = []
    extra = {"compile_mode": o.compile_mode} if o.compile_mode else {}
    if not o.tiny or o.compile:
        found += [("compile=repeated_blocks", {"compile": "repeated_blocks", **extra}),
                  ("compile=full", {"compile": "full", **extra})]
    names = CPU_BACKENDS
    if o.device.startswith("cuda"):
        names = GPU_BACKENDS + (SLOW_BACKENDS if o.all_backends else ())
    for name in names:
        try:
            dispatch._check_attention_backend_requirements(dispatch.AttentionBackendName(name))
        except (RuntimeError, ValueError):
            continue  # its package is not installed
        found.append((f"attention={name}", {"attention_backend": name}))
    found += [("cache=first_block", {"cache": {"type": "first_block", "threshold": 0.05}}),
              ("cache=taylorseer", {"cache": {"type": "taylorseer"}}),
              ("cache=pab", {"cache": {"type": "pab", "spatial_attention_block_skip_range": 2}}),
              ("cache=magcache", {"cache": {"type": "magcache"}}),  # ratios filled in after calibration
              ("cache=faster_cache", {"cache": {"type": "faster_cache"}})]
    if not o.tiny or o.compile:
        found.append(("compile=repeated_blocks+cache=first_block",
                      {"compile": "repeated_blocks", **extra, "cache": {"type": "first_block", "threshold": 0.05}}))
    return found


def wanted(o, name: str) -> bool:
    if o.only and not any(s in name for s in o.only):
        return name in ("stock", "off")
    return not any(s in name for s in o.skip)


def main(argv=None) -> int:
    o = parse_args(argv)
    import torch

    if o.device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"CUDA is not available (torch {torch.__version__}, built for CUDA {torch.version.cuda}); this "
             "benchmark times a GPU. Check the script itself with: --device cpu --tiny")
    if o.device == "cpu" and not o.tiny and not o.model_path:
        fail("the full-size model on the CPU would take hours: pass --tiny")
    if (o.frames - 1) % 4 or o.width % 16 or o.height % 16:
        fail(f"Wan needs 4k+1 frames and sizes by 16; got {o.width}x{o.height}, {o.frames} frames")
    import diffusers
    from diffusers.utils import logging as dlogging

    dlogging.set_verbosity_error()
    dlogging.disable_progress_bar()
    with contextlib.suppress(Exception):
        from transformers.utils import logging as tlogging

        tlogging.set_verbosity_error()
        tlogging.disable_progress_bar()
    torch.manual_seed(o.seed)
    env = {"torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version(),
           "device": o.device, "gpu": torch.cuda.get_device_name(0) if o.device.startswith("cuda") else None,
           "cpu_threads": torch.get_num_threads()}
    results: dict = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(o).items()}, "env": env,
                     "variants": {}}
    with tempfile.TemporaryDirectory(prefix="sorakit-bench-") as tmp:
        tmp = Path(tmp)
        if o.model_path:
            path = o.model_path
            log(f"weights: {path}")
        else:
            log(f"building a random-weight Wan 2.1 {'TOY' if o.tiny else '1.3B'} pipeline ...")
            path = str(build_random_wan(tmp / "wan", o.tiny, getattr(torch, o.dtype), o.device, o.seed))
            log(f"saved to {path}")
        results["weights"] = "random" if not o.model_path else path
        log(f"{o.width}x{o.height}, {o.frames} frames, {o.steps} steps, guidance {o.guidance}, {o.dtype}, "
            f"on {env['gpu'] or o.device}")
        bench = Bench(o, torch, path, tmp / "models")

        def record(name: str, run) -> None:
            if not wanted(o, name):
                return
            try:
                results["variants"][name] = run()
            except Exception as exc:  # noqa: BLE001 - a refused or failing switch is a result too
                reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
                results["variants"][name] = {"error": reason[:1500]}
                log(f"{name}: {'refused' if hasattr(exc, 'reason') else 'FAILED'}: {reason[:300]}")
            bench.free()
            write(o, results)

        record("stock", bench.stock)
        record("off", lambda: bench.sorakit("off"))
        for name, switches in variants(o, torch):
            if not wanted(o, name):
                continue
            if name == "cache=magcache":
                ratios = bench.calibrate_magcache()
                if not ratios:
                    results["variants"][name] = {"error": "MagCache calibration printed no ratios"}
                    continue
                switches = {"cache": {"type": "magcache", "mag_ratios": ratios, "num_inference_steps": o.steps}}
                log(f"magcache: calibrated {len(ratios)} ratios on this shape")
            record(name, lambda n=name, s=switches: bench.sorakit(n, **s))
    results["total_s"] = time.perf_counter() - T0
    for r in results["variants"].values():
        r.pop("_frames", None)
    write(o, results)
    report(results)
    stock, off = results["variants"].get("stock", {}), results["variants"].get("off", {})
    if "error" in stock or "error" in off:
        return 1
    return 0


def write(o, results: dict) -> None:
    if o.out:
        clean = {**results, "variants": {k: {kk: vv for kk, vv in v.items() if kk != "_frames"}
                                         for k, v in results["variants"].items()}}
        o.out.parent.mkdir(parents=True, exist_ok=True)
        o.out.write_text(json.dumps(clean, indent=2, default=str) + "\n")


def _fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def report(results: dict) -> None:
    rows = results["variants"]
    stock = rows.get("stock", {})
    print()
    head = (f"{'variant':<42} {'load s':>7} {'warm-up':>7} {'1st run':>7} {'s/step':>8} {'x stock':>7} "
            f"{'e2e s':>8} {'x stock':>7} {'PSNR dB':>7} {'SSIM':>6} {'peak GiB':>8}")
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:<42} refused/failed: {r['error'][:150]}")
            continue
        step_x = stock["s_per_step"] / r["s_per_step"] if stock.get("s_per_step") and r.get("s_per_step") else None
        e2e_x = stock["e2e_s"] / r["e2e_s"] if stock.get("e2e_s") else None
        p = r.get("psnr_db")
        print(f"{name:<42} {r['load_s']:>7.1f} {_fmt(r.get('warmup_s'), '.1f'):>7} {r['first_run_s']:>7.2f} "
              f"{_fmt(r.get('s_per_step'), '.3f'):>8} {_fmt(step_x, '.2f'):>7} {r['e2e_s']:>8.2f} "
              f"{_fmt(e2e_x, '.2f'):>7} {('inf' if p == math.inf else _fmt(p, '.1f')):>7} "
              f"{_fmt(r.get('ssim'), '.3f'):>6} {_fmt(r.get('peak_gib'), '.2f'):>8}")
    print("x stock = stock seconds / variant seconds (above 1: faster than stock diffusers). PSNR/SSIM: frames "
          "against sorakit's switch-off run at the same seed (inf / 1.000: identical).")
    if results.get("weights") == "random":
        print("Random weights: timings hold, the quality columns compare noise; use --model-path for real ones.")
    print(f"total {results['total_s']:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
