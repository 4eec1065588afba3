"""One rank of a context-parallel group, started by ``torchrun`` from test_context_parallel.py.

Every rank builds the engines of the plan's ``models`` and calls ``parallel.start`` (which reads
torchrun's WORLD_SIZE / RANK / LOCAL_RANK and initialises gloo). Ranks > 0 follow; rank 0 preloads the
models and renders the plan's jobs (each on its ``model``, else the plan's) through ``engine.render``
exactly as a worker does, then writes each
outcome (frames as .npy, or how it ended) into the output folder and tells the others to stop.
``follower_fails_after`` (a task id) makes rank 1 fail after that run, where rank 0 did not.

The one thing changed for the CPU: diffusers 0.42.1 puts rank r on device
``r % torch.accelerator.device_count()``, which divides by zero on a CPU-only torch. One device lets
it place every rank on the CPU; everything else (the gloo collectives, the Ulysses all-to-alls, the
sequence split and gather) is diffusers' own code.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

torch.accelerator.device_count = lambda: 1


class Context:
    """A task's context: cancelled once ``cancel_after`` cancel checks have passed."""

    def __init__(self, cancel_after: int | None = None) -> None:
        self.cancel_after, self.checks, self.fractions = cancel_after, 0, []

    def progress(self, fraction: float) -> None:
        self.fractions.append(fraction)

    def audio(self, track) -> None:
        pass

    def check_cancel(self) -> None:
        from sorakit.engines import Cancelled

        self.checks += 1
        if self.cancel_after is not None and self.checks > self.cancel_after:
            raise Cancelled("test")


def main() -> int:
    plan = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from sorakit.config import load_settings
    from sorakit.engines import Cancelled, EngineError, RenderJob, build_engines, parallel

    settings = load_settings({"data_dir": plan["data_dir"], "models": plan["models"]}, env={})
    engines = build_engines(settings)
    group = parallel.start(engines, 1)
    if not group.leader:
        failing = plan.get("follower_fails_after")
        if failing:  # this rank finishes that run, then fails where rank 0 did not
            engine, real = engines[plan["model"]], engines[plan["model"]].render_with_audio

            def render_then_fail(job, ctx):
                result = real(job, ctx)
                if job.task_id == failing:
                    raise RuntimeError("rank 1 failed after the run")
                return result

            engine.render_with_audio = render_then_fail
        return group.follow(engines)
    engine = engines[plan["model"]]
    outcomes = {"preloaded": engine.preload()}
    for name in plan["models"]:  # the others load and warm up too, each with a mesh of its own
        if name != plan["model"]:
            engines[name].preload()
    # the tokens rank 0's first self-attention sees: its share of the sequence when the split is on
    tokens = outcomes["tokens"] = []
    attention = engine.pipeline().transformer.blocks[0].attn1  # loaded by preload: no new collective
    attention.register_forward_pre_hook(lambda module, args, kwargs: tokens.append(
        (args[0] if args else kwargs["hidden_states"]).shape[1]), with_kwargs=True)
    for spec in plan["jobs"]:
        fields = {k: v for k, v in spec.items() if k not in ("name", "cancel_after", "model")}
        for key in ("image", "source"):
            if fields.get(key):
                fields[key] = Path(fields[key])
        ctx = Context(spec.get("cancel_after"))
        try:
            frames = engines[spec.get("model", plan["model"])].render(RenderJob(**fields), ctx)
        except Cancelled:
            outcomes[spec["name"]] = {"status": "cancelled", "checks": ctx.checks}
        except EngineError as exc:
            outcomes[spec["name"]] = {"status": "failed", "code": exc.code, "reason": exc.reason}
        else:
            np.save(out / f"{spec['name']}.npy", frames)
            outcomes[spec["name"]] = {"status": "ok", "progress": ctx.fractions[-1] if ctx.fractions else None}
    outcomes["speed"] = engine.describe()["speed"]
    (out / "outcomes.json").write_text(json.dumps(outcomes))
    return group.close()


if __name__ == "__main__":
    sys.exit(main())
