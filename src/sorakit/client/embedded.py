"""An embedded server: the real sorakit server in this process, on a free loopback port.

``sorakit generate`` uses it when no server is configured, and talks to it over HTTP like any
other server. Its data dir is the default one, so its tasks and drafts outlive the command.
"""

from __future__ import annotations

import socket
import threading
import time

from ..config import Settings, load_settings
from ..server.services import build_services


class EmbeddedServer:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.services = build_services(self.settings)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 30.0) -> EmbeddedServer:
        import uvicorn

        from ..server.app import create_app, uvicorn_options

        app = create_app(self.settings, services=self.services)
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                                     **uvicorn_options(self.settings)))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="sorakit-embedded", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the embedded server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop serving; a running task is handed back to the queue for the next start."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._sock.close()

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
