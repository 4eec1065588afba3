"""Run a real ``sorakit serve`` process for end-to-end tests (a helper module, not a test file).

    with ServerProcess(tmp_path / "data", env={"SORAKIT_LEASE_SECONDS": "2"}) as server:
        requests.get(server.url + "/healthz")
        server.token  # the bearer token of user ``local`` (from DIR/local.token)

The server runs in its own process group (its own session), listens on 127.0.0.1 on a free port,
and writes stdout and stderr to a log file in the data directory. ``kill()`` SIGKILLs the whole
group (a crash: nothing gets to clean up); ``stop()`` asks it to shut down with SIGTERM first.
Only the standard library and ``requests`` are used.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

STARTUP_TIMEOUT = 30.0
LOG_TAIL = 4000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerError(RuntimeError):
    """The server did not come up; the message carries the tail of its log."""


class ServerProcess:
    def __init__(self, data_dir: Path | str, *, port: int | None = None,
                 env: dict[str, str] | None = None, args: tuple[str, ...] | list[str] = (),
                 startup_timeout: float = STARTUP_TIMEOUT) -> None:
        self.data_dir = Path(data_dir)
        self.fixed_port = port
        self.port: int | None = port
        self.extra_env = dict(env or {})
        self.args = [str(a) for a in args]
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        #: set by ``stop()`` when the server ignored SIGTERM for too long and had to be SIGKILLed
        self.stop_escalated = False
        self.log_path: Path | None = None
        self._log_file = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> ServerProcess:
        if self.proc is not None:
            raise RuntimeError("this ServerProcess was already started")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # a port picked by us could be taken by someone else before the server binds it: retry
        for attempt in range(3):
            self.port = self.fixed_port or free_port()
            self._spawn()
            try:
                self._wait_healthy()
                return self
            except ServerError:
                log = self.log_text()
                self._reap()
                if self.fixed_port is None and "address already in use" in log.lower() and attempt < 2:
                    self.proc = None
                    continue
                raise
        raise AssertionError("unreachable")

    def _environment(self) -> dict[str, str]:
        # settings must come from this test only, never from the environment pytest runs in
        env = {k: v for k, v in os.environ.items() if not k.startswith("SORAKIT_")}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        return env

    def _spawn(self) -> None:
        n = 0
        while (self.data_dir / f"server-{n}.log").exists():
            n += 1
        self.log_path = self.data_dir / f"server-{n}.log"
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in _reap
        cmd = [sys.executable, "-m", "sorakit", "serve", "--data-dir", str(self.data_dir),
               "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, env=self._environment(),
                                     start_new_session=True)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"sorakit serve exited with {self.proc.returncode} before it was "
                                  f"healthy; log tail:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/healthz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self._signal(signal.SIGKILL)
        raise ServerError(f"sorakit serve was not healthy within {self.startup_timeout:.0f} s; "
                          f"log tail:\n{self.log_tail()}")

    def _signal(self, sig: int) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)  # the group id is the pid: start_new_session
        except ProcessLookupError:
            pass

    def _reap(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        """SIGKILL the whole process group and wait for the server to be gone."""
        self._signal(signal.SIGKILL)
        self._reap()

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (a graceful shutdown), wait up to ``timeout``, then SIGKILL. Returns the exit code.

        Uvicorn re-raises the signal once it has shut down, so a clean stop exits with ``-SIGTERM``.
        """
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.stop_escalated = True
                self._signal(signal.SIGKILL)
        self._reap()
        return self.proc.returncode

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> ServerProcess:
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort: never leave a server behind a failed test
        try:
            if self.running:
                self._signal(signal.SIGKILL)
        except Exception:
            pass

    # -- access ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("server not started")
        return self.proc.pid

    @property
    def token(self) -> str:
        path = self.data_dir / "local.token"
        if not path.is_file():
            raise RuntimeError(f"{path} does not exist (was user 'local' created elsewhere?)")
        return path.read_text(encoding="utf-8").strip()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        """An authenticated call as user ``local``: ``server.request("GET", "/backend/nf/pending/v2")``."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        kwargs.setdefault("timeout", 10)
        return requests.request(method, self.url + path, headers=headers, **kwargs)

    def log_text(self) -> str:
        if self._log_file is not None:
            self._log_file.flush()
        if self.log_path is None or not self.log_path.is_file():
            return ""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, chars: int = LOG_TAIL) -> str:
        return self.log_text()[-chars:]
