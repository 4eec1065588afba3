"""A throwaway PostgreSQL cluster for the tests: ``initdb`` into a temp dir, ``pg_ctl start`` on a
free port of 127.0.0.1, one fresh database per test, everything removed at the end.

PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres`` user (Debian's
package makes it) and its commands run through ``runuser``. Where the binaries are missing the
PostgreSQL tests skip, unless ``TESTS_REQUIRE_POSTGRES=1`` makes that a failure (.ci/run sets it
once PostgreSQL is installed).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest


def _bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self) -> None:
        bins = _bin_dir()
        if bins is None:
            raise FileNotFoundError("PostgreSQL's initdb and pg_ctl are not installed (apt-get install postgresql)")
        self.bins = bins
        self.as_root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="sorakit-pg-"))
        self.user = "postgres" if self.as_root else os.environ.get("USER") or "postgres"
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.port = _free_port()
        self.url = f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        cmd = [str(self.bins / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> Cluster:
        # C collation: ids order bytewise as on SQLite; fsync off: a test cluster needs no durability
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "--no-locale",
                  "-E", "UTF8", "--no-sync")
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def new_database(self) -> str:
        """A fresh empty database's URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + "/" + name


def start_or_skip() -> Cluster:
    """A started cluster; a skip where PostgreSQL is not installed (a failure under
    ``TESTS_REQUIRE_POSTGRES=1``). Installed but unable to start is always a failure."""
    try:
        cluster = Cluster()
    except FileNotFoundError as exc:
        if os.environ.get("TESTS_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"no PostgreSQL to test on: {exc}")
    return cluster.start()
