"""Context parallelism: one model's denoiser split over several GPUs of one machine (docs/parallel.md).

A model opts in with ``context_parallel`` in its ``[models.NAME]`` table, and a worker is started by
``torchrun`` with one process per GPU::

    [models.wan14b]
    family = "wan"
    path = "Wan-AI/Wan2.1-T2V-14B-Diffusers"
    context_parallel = { ulysses = 4 }      # or { ring = 4 } / { ring = 2, ulysses = 2 }; anything = true

    torchrun --nproc-per-node 4 -m sorakit worker --engines wan14b

How it maps onto diffusers 0.42.1 (``diffusers/models/_modeling_parallel.py``,
``hooks/context_parallel.py``, ``models/attention_dispatch.py``):

- ``transformer.enable_parallelism(config=ContextParallelConfig(ring_degree=, ulysses_degree=,
  ulysses_anything= / ring_anything=))`` after the attention backend is set and before cache or
  compile (engines/speed.py calls :func:`enable`). diffusers builds a ``("ring", "ulysses")`` device
  mesh over the whole world (``init_device_mesh``: ring x ulysses must equal the process count) and
  hooks the modules of the class's ``_cp_plan``: the sequence is split before the first block and
  gathered after ``proj_out``; every attention call then runs Ulysses (all-to-all over heads), ring
  (the key/value chunks of every rank, merged by their log-sum-exp) or both.
- Weights are not split: every rank holds the whole pipeline on its own GPU (``cuda:LOCAL_RANK``).
  What is split is the activations of the denoiser: the memory that grows with size and length.
- Ulysses runs on any backend diffusers registers for context parallelism, torch's SDPA ("native")
  included; it needs the head count divisible by its degree. Ring needs a backend that returns the
  log-sum-exp (flash-attn, cuDNN or flash SDPA, SageAttention: all CUDA-only), so it needs
  ``attention_backend``. Both need the token count divisible by the process count, unless
  ``anything = true`` (diffusers' ``ulysses_anything`` / ``ring_anything``: one mode only).
- diffusers places rank ``r`` on device ``r % torch.accelerator.device_count()``: with no accelerator
  (a CPU-only torch) that is a division by zero, so in 0.42.1 context parallelism needs GPUs.
  The collectives themselves work on gloo (sorakit's tests run a real 2-process Ulysses render on the
  CPU with only that device count patched).

Families (checked on the tiny pipelines of tests/tiny_pipelines.py, Ulysses, 2 processes):

- wan, wan22-ti2v (``WanTransformer3DModel``): supported. Wan's text, image (its separate I2V
  weights: the plan leaves the text+image context unsplit) and video-to-video, and Wan 2.2 TI2V's
  text and image (per-token timesteps, split by the plan too) render the same frames as one process.
- ltx (``LTXVideoTransformer3DModel``): has a plan, but its cross-attention mask is shaped per head
  ``(batch, heads, 1, text)`` while Ulysses leaves each rank a share of the heads: the attention
  call fails; ring attention would apply each rank's slice of the mask to every rank's text
  chunk. Refused.
- ltx2 (``LTX2VideoTransformer3DModel``): has a plan, but it splits RoPE tables of 3 dimensions and
  LTX-2's split RoPE (``rope_type = "split"``, as its checkpoint) has 4: they are left whole while
  the tokens are split, and the first attention fails. Refused.
- cogvideox, hunyuanvideo15: their transformers have no ``_cp_plan``. Refused.

Jobs. Rank 0 runs the normal worker (it alone claims tasks and writes results); the other ranks run
:meth:`Group.follow`. Every call that may run the parallel transformer (``preload`` and
``render_with_audio`` of a context-parallel model) is mirrored: rank 0 broadcasts
``(operation, model, RenderJob)`` on a gloo group of its own, every rank makes the same call (same
job, same seed: the same latents), rank 0 keeps the frames, the others drop theirs. Inside a run,
each ``ctx.check_cancel()`` (once per denoising step) is a broadcast of rank 0's answer, so a cancel
stops every rank at the same step. After each call the ranks exchange how it ended: all well, or all
failed alike (a bad input, a cancel: the task fails or is released, the group goes on), or some
failed and others not; then no rank can tell where the others stand, the worker stops (exit 1) and
torchrun ends the group. A rank stuck in a collective is ended by the process group's timeout.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import timedelta
from typing import Any

from ..config import ConfigError
from .base import Cancelled, EngineError

log = logging.getLogger("sorakit.engines")

#: families whose transformer takes diffusers 0.42.1's context parallelism as sorakit runs it
SUPPORTED = {"wan": "WanTransformer3DModel", "wan22-ti2v": "WanTransformer3DModel"}
#: why each other family is refused (what was found on diffusers 0.42.1)
REFUSED = {
    "ltx": ("LTXVideoTransformer3DModel has a context-parallel plan in diffusers 0.42.1, but its cross-attention "
            "mask is shaped per attention head, which Ulysses attention (each rank keeps a share of the heads) "
            "cannot apply, and ring attention would apply each rank's slice of the mask to every rank's text"),
    "ltx2": ("LTX2VideoTransformer3DModel has a context-parallel plan in diffusers 0.42.1, but the plan splits "
             "3-dimensional RoPE tables and LTX-2's split RoPE has 4 dimensions: the tokens are split, their "
             "rotary tables are not, and the first attention fails"),
    "cogvideox": "CogVideoXTransformer3DModel has no context-parallel plan (_cp_plan) in diffusers 0.42.1",
    "hunyuanvideo15": "HunyuanVideo15Transformer3DModel has no context-parallel plan (_cp_plan) in diffusers 0.42.1",
}
#: attention backends diffusers 0.42.1 registers with ``supports_context_parallel`` (its NPU one aside)
CP_BACKENDS = ("native", "_native_cudnn", "_native_flash", "flash", "flash_hub", "flash_varlen_hub", "_flash_3_hub",
               "_flash_3_varlen_hub", "sage", "sage_hub")
#: of those, the ones whose kernel returns the log-sum-exp that ring attention merges chunks with
#: (torch's plain SDPA, "native", does not: diffusers raises "does not support return_lse=True")
RING_BACKENDS = tuple(b for b in CP_BACKENDS if b != "native")
KEYS = ("ring", "ulysses", "anything")
#: the control group's timeout: a follower waits for rank 0's next job for as long as the worker idles
CONTROL_TIMEOUT = timedelta(days=365)
_DIVISIBLE = "divisible by mesh size"  # diffusers' assertion when the tokens do not split evenly


# -- configuration (no torch here: checked when the configuration loads) --------------------------------

def parse(name: str, table: dict[str, Any]) -> dict[str, Any] | None:
    """``context_parallel`` of ``[models.NAME]`` checked: ``{"ring": r, "ulysses": u, "anything": bool}``
    or None. ``table`` is the whole model table (the family, device and other switches matter)."""
    raw = table.get("context_parallel")
    where = f"models.{name}.context_parallel"
    if raw is None or raw is False:
        return None
    shape = "a table such as {ulysses = 2}, {ring = 2} or {ring = 2, ulysses = 2} (optionally anything = true)"
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{where} must be {shape}, not {raw!r}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; it takes ring, ulysses and anything")
    found: dict[str, Any] = {}
    for key in ("ring", "ulysses"):
        value = raw.get(key, 1)
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ConfigError(f"{where}.{key} must be a whole number of GPUs of at least 1, not {value!r}")
        found[key] = value
    anything = raw.get("anything", False)
    if not isinstance(anything, bool):
        raise ConfigError(f"{where}.anything must be true or false, not {anything!r}")
    found["anything"] = anything
    ring, ulysses = found["ring"], found["ulysses"]
    if ring == 1 and ulysses == 1:
        raise ConfigError(f"{where}: ring or ulysses must be 2 or more (the GPUs one model is split over)")
    if anything and ring > 1 and ulysses > 1:
        raise ConfigError(f"{where}.anything works with one mode only (diffusers' ulysses_anything or "
                          f"ring_anything): set ring or ulysses, not both")
    family = table.get("family")
    if family not in SUPPORTED:
        reason = REFUSED.get(family, f"family {family!r} is not one sorakit runs context-parallel")
        raise ConfigError(f"{where}: {reason}. Context parallelism works with the families "
                          f"{', '.join(SUPPORTED)}; remove the key.")
    device = table.get("device", "cuda")
    if device not in ("cuda", "cpu"):
        raise ConfigError(f"{where}: each process of the group uses its own GPU, cuda:LOCAL_RANK (torchrun's "
                          f"local rank), so models.{name}.device must be \"cuda\", not {device!r}")
    if table.get("cpu_offload"):
        raise ConfigError(f"{where} and models.{name}.cpu_offload cannot be combined: every rank keeps the whole "
                          f"pipeline on its own GPU; remove one of them")
    if table.get("cache") is not None:
        raise ConfigError(f"{where} and models.{name}.cache cannot be combined: a cache decides on each rank, "
                          f"from that rank's part of the tokens, whether to skip blocks, and ranks that decide "
                          f"differently wait for each other forever; remove one of them")
    backend = table.get("attention_backend")
    if backend is not None and backend not in CP_BACKENDS:
        raise ConfigError(f"{where}: attention_backend {backend!r} does not support context parallelism in "
                          f"diffusers 0.42.1; use one of {', '.join(CP_BACKENDS)}")
    if ring > 1 and backend not in RING_BACKENDS:
        raise ConfigError(f"{where}.ring needs an attention backend that returns the log-sum-exp ring attention "
                          f"merges with, and {'the default (torch SDPA, native)' if backend is None else repr(backend)}"
                          f" does not: set models.{name}.attention_backend to one of {', '.join(RING_BACKENDS)} "
                          f"(CUDA only), or use ulysses")
    return found


def degree(spec) -> int:
    """The processes (GPUs) a context-parallel model runs on: ring x ulysses; 1 without it."""
    cp = getattr(spec, "context_parallel", None)
    return cp["ring"] * cp["ulysses"] if cp else 1


def describe(spec) -> dict[str, Any] | None:
    cp = getattr(spec, "context_parallel", None)
    return dict(cp) if cp else None


def summary(spec) -> str | None:
    cp = getattr(spec, "context_parallel", None)
    if not cp:
        return None
    modes = [f"{mode}={cp[mode]}" for mode in ("ring", "ulysses") if cp[mode] > 1]
    return "context_parallel=" + "+".join(modes) + (" (anything)" if cp["anything"] else "")


# -- the process group ---------------------------------------------------------------------------------

def torchrun_env(env=None) -> tuple[int, int, int] | None:
    """``(world size, rank, local rank)`` when torchrun (or any launcher setting its variables) started
    this process with more than one process, else None."""
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        rank = int(env["RANK"])
        local_rank = int(env.get("LOCAL_RANK", rank))
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"WORLD_SIZE is set but RANK / LOCAL_RANK are missing or not numbers ({exc}); "
                          f"start the worker with torchrun") from None
    return world, rank, local_rank


_group: Group | None = None


def current() -> Group | None:
    """This process's context-parallel group (None: not started by torchrun)."""
    return _group


def start(engines: dict[str, Any], threads: int = 1, *, spawned: bool = False, env=None) -> Group | None:
    """Under torchrun: check the models against the process count, bind this process to its GPU,
    initialise torch.distributed and return the group; None when this process runs alone (or was
    ``spawned`` by ``sorakit serve``, whose workers are never a group). Problems are ConfigErrors."""
    global _group
    found = None if spawned else torchrun_env(env)
    if found is None:
        return None
    world, rank, local_rank = found
    specs = [e.spec for e in engines.values() if describe(getattr(e, "spec", None))]
    if not specs:
        raise ConfigError(f"this worker was started by torchrun as {world} processes, but no [models] table sets "
                          f"context_parallel, so every rank but 0 would have nothing to do; start it without "
                          f"torchrun or set models.NAME.context_parallel")
    for spec in specs:
        if degree(spec) != world:
            raise ConfigError(f"models.{spec.name}.context_parallel splits the model over {degree(spec)} GPUs "
                              f"(ring x ulysses), but torchrun started {world} processes; start it with "
                              f"--nproc-per-node {degree(spec)}, or serve that model from another worker")
    if threads != 1:
        raise ConfigError("--threads must be 1 under torchrun: every rank runs the same model calls in the same "
                          "order, so rank 0 runs one task at a time")
    devices = sorted({spec.device for spec in specs})
    if len(devices) > 1:
        raise ConfigError(f"the context-parallel models disagree on the device ({', '.join(devices)}); use cuda")
    import torch
    import torch.distributed as dist

    if devices[0] == "cuda":
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise ConfigError(f"rank {rank} needs GPU cuda:{local_rank} (its LOCAL_RANK), but this machine has "
                              f"{torch.cuda.device_count() if torch.cuda.is_available() else 'no'} CUDA GPU(s)")
        torch.cuda.set_device(local_rank)
        # gloo beside NCCL for the CPU-side collectives (diffusers' own advice for its *_anything modes)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    _group = Group(dist.get_rank(), dist.get_world_size(), local_rank, devices[0], control)
    log.info("context parallelism: rank %d of %d on %s (%s)", _group.rank, _group.world, _group.device_name,
             backend)
    return _group


def leads(spec) -> bool:
    """Whether a call on this model must be mirrored to the other ranks now: this is rank 0 of a
    group, the model is context-parallel, and this thread is not already inside a mirrored call."""
    group = _group
    return (group is not None and group.leader and bool(describe(spec))
            and not getattr(group._inside, "active", False))


def check_ready(spec) -> None:
    """Before a context-parallel model's weights load: is this process part of a matching group?"""
    if not describe(spec):
        return
    where = f"models.{spec.name}.context_parallel"
    if _group is None:
        raise EngineError(f"{where} splits this model over {degree(spec)} GPUs, which needs a worker started by "
                          f"torchrun with one process per GPU: torchrun --nproc-per-node {degree(spec)} -m sorakit "
                          f"worker (this process runs alone)", code="context_parallel")
    if _group.world != degree(spec):
        raise EngineError(f"{where} needs {degree(spec)} processes and this group has {_group.world}",
                          code="context_parallel")


def enable(spec, transformer, label: str = "transformer") -> None:
    """``transformer.enable_parallelism`` with the model's ``ContextParallelConfig`` (speed.apply calls
    this after the attention backend and before cache and compile). Refusals are SpeedSwitchErrors."""
    import torch

    from .speed import SpeedSwitchError

    where, cls, cp = f"models.{spec.name}.context_parallel", type(transformer).__name__, spec.context_parallel
    try:
        check_ready(spec)
    except EngineError as exc:
        raise SpeedSwitchError(exc.reason, code="context_parallel") from None
    if not getattr(transformer, "_cp_plan", None):
        raise SpeedSwitchError(f"{where}: the {label} of this model ({cls}) has no context-parallel plan (_cp_plan) "
                               f"in the installed diffusers; remove the key", code="context_parallel")
    heads = getattr(transformer.config, "num_attention_heads", None)
    if cp["ulysses"] > 1 and not cp["anything"] and heads and heads % cp["ulysses"]:
        raise SpeedSwitchError(f"{where}: Ulysses attention gives each of {cp['ulysses']} GPUs a share of the "
                               f"attention heads, and {cls} has {heads}; use a degree that divides {heads}, ring, or "
                               f"anything = true", code="context_parallel")
    if spec.device == "cpu":
        accelerator = torch.accelerator.current_accelerator()
        if accelerator is not None:
            raise SpeedSwitchError(f"{where}: diffusers builds its device mesh on this machine's accelerator "
                                   f"({accelerator.type}); set models.{spec.name}.device = \"cuda\"",
                                   code="context_parallel")
        if torch.accelerator.device_count() == 0:
            raise SpeedSwitchError(f"{where}: diffusers 0.42.1 places rank r on device r % "
                                   f"torch.accelerator.device_count(), and this machine has no accelerator; context "
                                   f"parallelism needs CUDA GPUs (device = \"cuda\")", code="context_parallel")
    from diffusers import ContextParallelConfig

    config = ContextParallelConfig(ring_degree=cp["ring"], ulysses_degree=cp["ulysses"],
                                   ulysses_anything=cp["anything"] and cp["ulysses"] > 1,
                                   ring_anything=cp["anything"] and cp["ring"] > 1)
    try:
        transformer.enable_parallelism(config=config)
    except (ValueError, RuntimeError, NotImplementedError, ZeroDivisionError) as exc:
        raise SpeedSwitchError(f"{where}: diffusers cannot split the {label} ({cls}): {type(exc).__name__}: {exc}",
                               code="context_parallel") from None


class Group:
    """This process's place in the context-parallel group, and the jobs protocol between the ranks."""

    def __init__(self, rank: int, world: int, local_rank: int, device: str, control) -> None:
        self.rank, self.world, self.local_rank, self.device, self.control = rank, world, local_rank, device, control
        self.lock = threading.Lock()
        #: set when the ranks no longer agree on where they are; the worker stops (torchrun ends the group)
        self.broken = threading.Event()
        self._callbacks: list = []
        self._inside = threading.local()
        self._closed = False

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @property
    def device_name(self) -> str:
        return f"cuda:{self.local_rank}" if self.device == "cuda" else "cpu"

    def when_broken(self, callback) -> None:
        """``callback()`` once the group breaks (the worker CLI stops its pool)."""
        self._callbacks.append(callback)
        if self.broken.is_set():
            callback()

    # -- the wire (the gloo control group) ----------------------------------------------------------
    def _broadcast(self, message: Any = None) -> Any:
        import torch.distributed as dist

        box = [message]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def flag(self, value: bool = False) -> bool:
        """Rank 0's ``value`` on every rank (others pass anything)."""
        import torch
        import torch.distributed as dist

        cell = torch.tensor([1 if value else 0], dtype=torch.uint8)
        dist.broadcast(cell, src=0, group=self.control)
        return bool(cell.item())

    def _outcomes(self, error: BaseException | None) -> list:
        import torch.distributed as dist

        mine = None if error is None else (type(error).__name__, str(error)[:300])
        everyone: list = [None] * self.world
        dist.all_gather_object(everyone, mine, group=self.control)
        return everyone

    # -- one mirrored call --------------------------------------------------------------------------------
    def _call(self, engine, operation: str, job, ctx):
        self._inside.active = True
        try:
            if operation == "preload":
                return engine.preload()
            if operation == "render":
                return engine.render_with_audio(job, ctx)
            raise EngineError(f"unknown context-parallel operation {operation!r}")
        finally:
            self._inside.active = False

    def lead(self, engine, operation: str, job=None, ctx=None):
        """Rank 0: send ``(operation, model, job)`` to every rank, run it here, and settle how it ended."""
        with self.lock:
            if self.broken.is_set() or self._closed:
                raise EngineError("The GPUs of this worker's context-parallel group stopped agreeing after an "
                                  "earlier failure; the worker is restarting.", code="context_parallel")
            self._broadcast((operation, engine.name, job))
            result, error = None, None
            try:
                result = self._call(engine, operation, job, _LeaderContext(self, ctx) if ctx is not None else None)
            except Exception as exc:  # noqa: BLE001 - settled with the other ranks first
                error = exc
            outcomes = self._outcomes(error)
            if all(o is None for o in outcomes):
                return result
            if all(o is not None for o in outcomes):
                explained = _explained(error, engine)
                if explained is error:
                    raise error
                raise explained from None
            self._break(outcomes)
            failed = ", ".join(f"rank {r}: {o[0]}: {o[1]}" for r, o in enumerate(outcomes) if o is not None)
            raise EngineError(f"The model's GPUs did not all finish this run alike ({failed}); the worker stops so "
                              f"that torchrun can restart them together.", code="context_parallel")

    def follow(self, engines: dict[str, Any]) -> int:
        """Ranks > 0: make every call rank 0 sends, until it says stop; the exit status (1: broken)."""
        log.info("rank %d: following rank 0's context-parallel jobs", self.rank)
        while True:
            operation, name, job = self._broadcast()
            if operation == "stop":
                log.info("rank %d: rank 0 stopped", self.rank)
                return 0
            error = None
            try:
                engine = engines.get(name)
                if engine is None:
                    raise EngineError(f"model {name!r} is not configured on rank {self.rank}")
                self._call(engine, operation, job, _FollowerContext(self))
            except Exception as exc:  # noqa: BLE001 - settled with the other ranks
                error = exc
            outcomes = self._outcomes(error)
            if any(o is None for o in outcomes) and any(o is not None for o in outcomes):
                self._break(outcomes)
                return 1
            if error is not None and not isinstance(error, Cancelled):
                log.warning("rank %d: %s of %s failed on every rank: %s", self.rank, operation, name, error)

    def _break(self, outcomes: list) -> None:
        log.error("context parallelism: the ranks ended a run differently (%s); stopping", outcomes)
        self.broken.set()
        for callback in self._callbacks:
            try:
                callback()
            except Exception:  # noqa: BLE001
                log.exception("context parallelism: a stop callback failed")

    def close(self, timeout: float = 60.0) -> int:
        """Rank 0, at the worker's end: tell the other ranks to stop. The exit status (1: broken)."""
        if self.leader and not self._closed and not self.broken.is_set():
            if self.lock.acquire(timeout=timeout):
                try:
                    self._broadcast(("stop", None, None))
                except Exception as exc:  # noqa: BLE001 - the others may be gone already
                    log.warning("context parallelism: could not tell the other ranks to stop: %s", exc)
                finally:
                    self._closed = True
                    self.lock.release()
        return 1 if self.broken.is_set() else 0


class _LeaderContext:
    """Rank 0's task context inside a mirrored run: each cancel check is decided here and broadcast."""

    def __init__(self, group: Group, ctx) -> None:
        self.group, self.ctx = group, ctx

    def progress(self, fraction: float) -> None:
        self.ctx.progress(fraction)

    def audio(self, track) -> None:
        self.ctx.audio(track)

    def check_cancel(self) -> None:
        reason = None
        try:
            self.ctx.check_cancel()
        except Cancelled as exc:
            reason = exc
        if self.group.flag(reason is not None):
            raise reason


class _FollowerContext:
    """A follower's task context: rank 0 decides cancellation; progress and sound are rank 0's."""

    def __init__(self, group: Group) -> None:
        self.group = group

    def progress(self, fraction: float) -> None:
        pass

    def audio(self, track) -> None:
        pass

    def check_cancel(self) -> None:
        if self.group.flag():
            raise Cancelled("cancelled on rank 0")


def _explained(error: BaseException, engine) -> BaseException:
    """A failure every rank had, readable: diffusers' bare assertion on an uneven split gets words."""
    if isinstance(error, AssertionError) and _DIVISIBLE in str(error):
        spec = engine.spec
        return EngineError(f"Model {spec.name!r} splits each video's tokens over {degree(spec)} GPUs and this size "
                           f"and length do not divide evenly; pick another size or length, or set "
                           f"models.{spec.name}.context_parallel.anything = true.", code="context_parallel")
    return error
