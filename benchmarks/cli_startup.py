"""Benchmark: how long the ``sorakit`` command takes to start, against ``python -c pass``.

Runs, interleaved round after round so a busy machine slows each alike:

- ``python -c pass``: the interpreter alone, the unit of the ratios;
- ``python -c "import typer"``: the floor of any typer command line (for reference);
- ``sorakit --help``;
- ``sorakit status`` against a running server on 127.0.0.1 (the real app, in this process's
  background thread, no workers, over a fresh data dir): a request and a table.

Bytecode is cached (in a temporary ``PYTHONPYCACHEPREFIX``, even where ``PYTHONDONTWRITEBYTECODE``
is set), as on a user's machine. Prints the median wall time and the median CPU time (user +
system of the child) of each over N runs, and their ratios to ``python -c pass``. The CPU figures
are the steadier ones on a loaded machine. The target of issue 13: ``sorakit --help`` at most 5x
``python -c pass``.

Run:  .venv/bin/python benchmarks/cli_startup.py [--runs 21]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sorakit_command() -> list[str]:
    script = Path(sys.executable).with_name("sorakit")  # the console script, as a user runs it
    return [str(script)] if script.is_file() else [sys.executable, "-m", "sorakit"]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-2000:]}")
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        from sorakit.cli.serve import local_token
        from sorakit.client.embedded import EmbeddedServer
        from sorakit.config import load_settings

        settings = load_settings({"data_dir": Path(tmp) / "data", "workers": 0})
        with EmbeddedServer(settings) as server:
            token = local_token(server.services)
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith("SORAKIT_") and k != "PYTHONDONTWRITEBYTECODE"}
            env.update(SORAKIT_DATA_DIR=str(Path(tmp) / "data"), SORAKIT_CONFIG_DIR=str(Path(tmp) / "cfg"),
                       # bytecode cached as on a user's machine (the warm-up run writes it), kept
                       # out of the source tree
                       PYTHONPYCACHEPREFIX=str(Path(tmp) / "pycache"))
            sorakit = sorakit_command()
            cases = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "python -c 'import typer'": [sys.executable, "-c", "import typer"],
                "sorakit --help": [*sorakit, "--help"],
                "sorakit status": [*sorakit, "status", "--server", server.url, "--token", token],
            }
            for argv in cases.values():
                timed(argv, env)  # warm the file cache and the bytecode
            walls = {name: [] for name in cases}
            cpus = {name: [] for name in cases}
            for _ in range(args.runs):
                for name, argv in cases.items():
                    wall, cpu = timed(argv, env)
                    walls[name].append(wall)
                    cpus[name].append(cpu)

    unit_wall = statistics.median(walls["python -c pass"])
    unit_cpu = statistics.median(cpus["python -c pass"])
    print(f"medians over {args.runs} runs (os.cpu_count() = {os.cpu_count()}; load average "
          f"{os.getloadavg()[0]:.2f})\n")
    print(f"{'':26} {'wall':>9} {'ratio':>7}   {'cpu':>9} {'ratio':>7}")
    for name in cases:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"{name:26} {wall * 1000:7.1f}ms {wall / unit_wall:6.1f}x   {cpu * 1000:7.1f}ms {cpu / unit_cpu:6.1f}x")
    print("\ntarget: sorakit --help at most 5x python -c pass")


if __name__ == "__main__":
    main()
