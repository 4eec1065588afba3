"""Benchmark: engine overhead -- a task through the server against the same pipeline called directly.

Issue text: "engine overhead, the wall time of a task through the server against calling the same
pipeline directly with the same arguments in the same run, with a random model sized so one run
takes at least 10 s on CPU (target: at most 1.05)".

What it does:

1. Builds the bench-scale random-weight Wan 2.1 pipeline of ``tests/tiny_pipelines.py``
   (``save_pipeline("wan", dir, scale="bench")``) into a temporary directory.
2. Configures it as a server model (float32, cpu, 50 steps, ``resolution = {small = [128, 128]}``,
   ``max_frames = 25``) and checks that the request used here (landscape, small, ``n_frames=45``:
   1.5 s at 30 fps -> 24 Wan frames at 16 fps -> snapped to 4k+1 = 25) maps to exactly
   ``BENCH_CALL`` (128x128, 25 frames).
3. Starts the real app in-process (``tests/conftest.Api``: TestClient, lifespan, 1 worker thread;
   no socket is opened) and loads the same directory once more with
   ``DiffusionPipeline.from_pretrained(dir, dtype=float32)`` in the main thread.
4. Warm-up: one server task (its worker loads and keeps its pipeline; the ``RenderJob`` it runs is
   captured), then one direct call. Then ``--repeat`` rounds, alternating:

   A  direct: ``pipe(**engine.call_arguments(job))`` with the captured job (the very arguments
      the engine passes, the same seed included), then the engine's own uint8 conversion and
      ``encode_mp4`` to a file: "pipeline only" and "pipeline + uint8 + encode" are both kept.
   B  server, polled: ``POST /backend/nf/create`` (same prompt, seed, size, frames) timed to the
      first ``GET /backend/nf/tasks/{id}/v2`` that reads ``succeeded``, polling every ``--poll`` s.
   C  server, not polled: the same request, the main thread waiting on an event set when the
      worker's ``store.finish`` commit returns (no HTTP polling at all) -- so B - C is what the
      client's polling costs, granularity and CPU together.

   The engine's ``render_with_audio`` (what its ``frames`` runs) and the store's ``finish`` are
   wrapped (timestamps only) to split a server task into: POST, create -> render start (mostly
   the idle worker's 0.2 s claim poll), render (pipeline + StepHook + heartbeat + progress
   writes), encode + thumbnail + commit, and commit -> seen by the poll.
5. Checks that the server's frames equal the direct call's (same arguments, same threads), and
   that torch uses the same intra-op thread count in the worker thread as in the main thread
   (``torch.set_num_threads`` is called once, up front; torch re-applies it in new threads).

Also times 100 status GETs with the server idle (wall and process CPU per GET), to size what
polling at ``--poll`` costs the worker it shares the process (and the GIL) with.

Prints best and mean seconds per arm, the ratios server/direct (best of each; target <= 1.05),
the breakdown, and the polling's contribution. No assertions on timing.

Run:  .venv/bin/python benchmarks/engine_overhead.py [--repeat 2] [--poll 0.05] [--threads N]
(15-30 s per run on 2 cores, 2 warm-ups + 3 per round: ~2.5 min with the defaults, ~4.5 with --repeat 4)
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

MODEL = "wan-bench"
PROMPT = "a red kite over a grey sea"
SEED = 1234
ORIENTATION, SIZE, N_FRAMES_30FPS = "landscape", "small", 45
TASK_TIMEOUT = 600.0  # seconds: a task that takes longer than this aborts the benchmark


def model_table(path: Path, steps: int) -> dict:
    return {"family": "wan", "path": str(path), "dtype": "float32", "device": "cpu", "steps": steps,
            "resolution": {"small": [128, 128]}, "max_frames": 25}


def check_mapping(bench_call: dict) -> None:
    """The request used here must map onto exactly BENCH_CALL's size and frame count."""
    from sorakit.engines.families import FAMILIES

    plan = FAMILIES["wan"].plan(ORIENTATION, SIZE, N_FRAMES_30FPS, resolution={"small": (128, 128)},
                                max_frames=25)
    got = {"height": plan.height, "width": plan.width, "num_frames": plan.n_frames}
    if got != bench_call:
        raise SystemExit(f"request maps to {got}, not BENCH_CALL {bench_call}: fix the constants")


class Probe:
    """Timestamps from inside the server: wraps the engine's render and the store's finish."""

    def __init__(self, engine, store) -> None:
        import torch

        self.lock = threading.Lock()
        self.render_start = self.render_end = self.finish_at = None
        self.frames = self.job = None
        self.worker_threads: int | None = None
        self.finished = threading.Event()
        # the engine's frames() runs render_with_audio (not render): wrap what the worker really calls
        render, finish = engine.render_with_audio, store.finish

        def timed_render(job, ctx):
            self.render_start = time.perf_counter()
            self.worker_threads = torch.get_num_threads()
            video, track = render(job, ctx)
            self.render_end = time.perf_counter()
            self.frames, self.job = video, job
            return video, track

        def timed_finish(*args, **kwargs):
            done = finish(*args, **kwargs)
            self.finish_at = time.perf_counter()
            self.finished.set()
            return done

        engine.render_with_audio = timed_render  # instance attributes: frames() calls self.render_with_audio
        store.finish = timed_finish

    def reset(self) -> None:
        self.render_start = self.render_end = self.finish_at = None
        self.finished.clear()


def server_run(api, probe: Probe, poll: float | None) -> dict:
    """One task through the API. ``poll`` None: wait on the finish commit instead of polling."""
    probe.reset()
    t0 = time.perf_counter()
    r = api.create(model=MODEL, prompt=PROMPT, seed=SEED, orientation=ORIENTATION, size=SIZE,
                   n_frames=N_FRAMES_30FPS)
    t_posted = time.perf_counter()
    if r.status_code != 200:
        raise SystemExit(f"create failed: {r.status_code} {r.text}")
    task_id = r.json()["id"]
    polls, get_busy = 0, 0.0
    deadline = t0 + TASK_TIMEOUT
    if poll is None:
        if not probe.finished.wait(TASK_TIMEOUT):
            raise SystemExit("task did not finish in time")
        t_seen = probe.finish_at
        task = api.task(task_id)
    else:
        while True:
            g0 = time.perf_counter()
            task = api.task(task_id)
            t_seen = time.perf_counter()
            polls, get_busy = polls + 1, get_busy + (t_seen - g0)
            if task["status"] in ("succeeded", "failed", "cancelled") or t_seen > deadline:
                break
            time.sleep(poll)
    if task["status"] != "succeeded":
        raise SystemExit(f"task {task_id} ended {task['status']}: {task.get('failure_reason')}")
    if (task["width"], task["height"], task["n_frames"]) != (128, 128, 25):
        raise SystemExit(f"task made {task['width']}x{task['height']}x{task['n_frames']}, not 128x128x25")
    probe.finished.wait(5)  # the commit happened before the status read; the event is set just after
    return {"task_id": task_id, "total": t_seen - t0, "exact": probe.finish_at - t0, "post": t_posted - t0,
            "to_render": probe.render_start - t0, "render": probe.render_end - probe.render_start,
            "encode_commit": probe.finish_at - probe.render_end,
            "commit_to_seen": t_seen - probe.finish_at, "polls": polls, "get_busy": get_busy}


def get_cost(api, task_id: str, n: int = 100) -> tuple[float, float]:
    """Wall and process CPU seconds of one status GET while nothing else runs."""
    w0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        api.task(task_id)
    return (time.perf_counter() - w0) / n, (time.process_time() - c0) / n


def direct_run(pipe, engine, job, workdir: Path, n: int) -> tuple[dict, object]:
    from sorakit.engines.diffusers_engine import _to_uint8
    from sorakit.media.encode import encode_mp4

    args = engine.call_arguments(job)  # a fresh generator seeded like the engine's, every run
    t0 = time.perf_counter()
    output = pipe(**args)
    t_pipe = time.perf_counter()
    video = _to_uint8(output.frames[0], job)
    path = workdir / f"direct-{n}.mp4"
    encode_mp4(iter(video), path, width=job.width, height=job.height, fps=job.fps,
               expected_frames=job.n_frames)
    t_end = time.perf_counter()
    path.unlink()
    return {"pipeline": t_pipe - t0, "total": t_end - t0, "encode": t_end - t_pipe}, video


def summary(values: list[float]) -> tuple[float, float]:
    return min(values), statistics.fmean(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2, help="timed rounds (A B C each), after a warm-up")
    parser.add_argument("--poll", type=float, default=0.05, help="client polling interval, seconds")
    parser.add_argument("--steps", type=int, default=50, help="denoising steps (50: BENCH_CALL's >= 10 s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for both sides (default: torch's default)")
    opts = parser.parse_args()
    if opts.repeat < 1 or opts.poll <= 0 or opts.steps < 1:
        parser.error("--repeat and --steps must be >= 1, --poll > 0")

    for key in [k for k in os.environ if k.startswith("SORAKIT_")]:
        del os.environ[key]  # no developer settings leak in
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)

    import torch
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as dlogging

    dlogging.set_verbosity_error()
    dlogging.disable_progress_bar()  # "Loading pipeline components" bars
    from transformers.utils import logging as tlogging

    tlogging.disable_progress_bar()  # "Loading weights" bars
    torch.set_num_threads(opts.threads or torch.get_num_threads())  # explicit: re-applied in new threads
    main_threads = torch.get_num_threads()

    from conftest import Api
    from tiny_pipelines import BENCH_CALL, save_pipeline

    check_mapping(BENCH_CALL)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="sorakit-engine-overhead-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        weights = save_pipeline("wan", tmp / "wan-bench", scale="bench")
        print(f"built bench Wan pipeline in {time.perf_counter() - t:.1f} s; torch {torch.__version__}, "
              f"{main_threads} intra-op threads, {os.cpu_count()} CPUs; {opts.steps} steps, "
              f"{BENCH_CALL['width']}x{BENCH_CALL['height']}, {BENCH_CALL['num_frames']} frames", flush=True)

        api = Api(tmp / "data", 1, models={MODEL: model_table(weights, opts.steps)})
        try:
            engine = api.services.engines[MODEL]
            probe = Probe(engine, api.services.store)
            pipe = DiffusionPipeline.from_pretrained(weights, dtype=torch.float32).to("cpu")
            pipe.set_progress_bar_config(disable=True)  # as the engine does: no tqdm on either side

            print("warm-up: server (worker loads its pipeline) ...", flush=True)
            warm_b = server_run(api, probe, opts.poll)
            job = probe.job
            idle_get = get_cost(api, warm_b["task_id"])
            args = engine.call_arguments(job)
            shown = {k: v for k, v in args.items() if k not in ("generator", "negative_prompt")}
            print(f"  {warm_b['total']:.2f} s; engine arguments: {shown}, negative_prompt="
                  f"{args['negative_prompt'][:30]!r}..., seed {job.seed}, fps {job.fps}", flush=True)
            print("warm-up: direct ...", flush=True)
            warm_a, direct_frames = direct_run(pipe, engine, job, tmp, 0)
            print(f"  {warm_a['total']:.2f} s", flush=True)
            same = probe.frames is not None and direct_frames.shape == probe.frames.shape and \
                bool((direct_frames == probe.frames).all())

            runs: dict[str, list[dict]] = {"A": [], "B": [], "C": []}
            for n in range(1, opts.repeat + 1):
                a, _ = direct_run(pipe, engine, job, tmp, n)
                runs["A"].append(a)
                print(f"round {n}: A direct {a['total']:.2f} s (pipeline {a['pipeline']:.2f})", flush=True)
                b = server_run(api, probe, opts.poll)
                runs["B"].append(b)
                print(f"round {n}: B server polled {b['total']:.2f} s (commit at {b['exact']:.2f})",
                      flush=True)
                c = server_run(api, probe, None)
                runs["C"].append(c)
                print(f"round {n}: C server unpolled {c['total']:.2f} s", flush=True)
        finally:
            api.close()

    report(runs, opts, main_threads, probe.worker_threads, same, idle_get, load_before)


def report(runs: dict, opts, main_threads: int, worker_threads: int | None, same_frames: bool,
           idle_get: tuple[float, float], load_before: tuple[float, ...]) -> None:
    A, B, C = runs["A"], runs["B"], runs["C"]
    rows = [
        ("A direct: pipeline only", [r["pipeline"] for r in A]),
        ("A direct: pipeline + uint8 + encode", [r["total"] for r in A]),
        (f"B server: create -> succeeded (poll {opts.poll:g} s)", [r["total"] for r in B]),
        ("B server: create -> commit", [r["exact"] for r in B]),
        ("C server: create -> commit, no polling", [r["total"] for r in C]),
    ]
    print()
    print(f"{'arm':<46} {'runs':>4} {'best s':>8} {'mean s':>8}")
    stats = {}
    for name, values in rows:
        best, mean = summary(values)
        stats[name] = best
        print(f"{name:<46} {len(values):>4} {best:>8.2f} {mean:>8.2f}")

    direct_full, direct_pipe = stats[rows[1][0]], stats[rows[0][0]]
    b_best, b_exact, c_best = stats[rows[2][0]], stats[rows[3][0]], stats[rows[4][0]]
    print()
    print("ratios, best of each (target: server/direct <= 1.05):")
    print(f"  B server polled      / direct incl. encode  {b_best / direct_full:7.3f}")
    print(f"  B server polled      / direct pipeline only {b_best / direct_pipe:7.3f}")
    print(f"  C server unpolled    / direct incl. encode  {c_best / direct_full:7.3f}")

    def mean(rs, key):
        return statistics.fmean(r[key] for r in rs)

    print()
    print("where a server task's time goes (means over B and C):")
    both = B + C
    print(f"  POST /create                                {mean(both, 'post'):7.3f} s")
    print(f"  create -> render start (worker claim poll)  {mean(both, 'to_render'):7.3f} s")
    print(f"  render (engine: pipeline + step hook)       {mean(both, 'render'):7.3f} s"
          f"   vs direct pipeline {statistics.fmean(r['pipeline'] for r in A):.3f} s")
    print(f"  render end -> commit (encode, thumb, db)    {mean(both, 'encode_commit'):7.3f} s"
          f"   vs direct uint8 + encode {statistics.fmean(r['encode'] for r in A):.3f} s")
    print()
    print(f"polling every {opts.poll:g} s (B):")
    print(f"  commit -> seen by the poll (granularity)    {mean(B, 'commit_to_seen'):7.3f} s mean")
    print(f"  GETs per task, time spent in them           {mean(B, 'polls'):7.0f}   "
          f"{mean(B, 'get_busy'):.2f} s per task ({mean(B, 'get_busy') / mean(B, 'total'):.1%} of it, "
          f"competing with torch for the cores)")
    get_wall, get_cpu = idle_get
    print(f"  one GET with the server idle                {get_wall * 1e3:7.2f} ms wall, {get_cpu * 1e3:.2f} ms "
          f"CPU (~{get_cpu / (get_cpu + opts.poll):.1%} of a core at this poll rate, GIL held)")
    print(f"  B create->commit - C create->commit, means  {mean(B, 'exact') - mean(C, 'total'):+7.3f} s "
          f"(polling's CPU cost; noise is ~ the spread of the runs)")
    print()
    print(f"torch intra-op threads: main {main_threads}, worker {worker_threads}"
          f"{'' if main_threads == worker_threads else '  <-- DIFFERENT'}")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} "
          f"on {os.cpu_count()} CPUs (other processes on the machine make every figure noisier)")
    print(f"server frames == direct frames (same arguments, same seed): {same_frames}")


if __name__ == "__main__":
    main()
