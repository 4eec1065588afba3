"""A fault-injecting HTTP/1.1 proxy on 127.0.0.1, and a tiny file host (test helpers, not tests).

    with FaultProxy(upstream_port) as proxy:
        proxy.add(r"^/assets/", cut_after=600_000)            # cut the next asset body, close
        proxy.add(r"^/backend/nf/pending/v2", respond=(429, {"Retry-After": "1"}, b"{}"), times=1)
        SoraClient(proxy.url, token, ...)
        proxy.seen  # every request: Seen(time, method, target, headers, action)

Each client request is forwarded on a fresh upstream connection (``Connection: close``), so a
fault never leaves a half-read answer on a shared socket. The client side keeps its connection
alive when the upstream answer has a ``Content-Length``.

A rule matches by ``re.search`` of ``pattern`` on the request target (path and query) and an
optional method; the first rule with ``times`` left applies (``times=None``: every match). Its
actions, at most one of ``respond``/``refuse``/``drop_response``/``cut_after`` plus the modifiers
``delay`` and ``strip_range``:

- ``respond=(status, headers, body)``: answer without forwarding.
- ``refuse=True``: close the connection without forwarding (the server never hears of it).
- ``drop_response=True``: forward, read the whole answer, close without sending any of it.
- ``cut_after=N``: send the answer's head and its first N body bytes, then close.
- ``delay=S``: wait S seconds before forwarding.
- ``strip_range=True``: remove the ``Range`` header before forwarding.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}


@dataclass
class Rule:
    pattern: str
    method: str | None = None
    times: int | None = 1
    respond: tuple[int, dict[str, str], bytes] | None = None
    refuse: bool = False
    drop_response: bool = False
    cut_after: int | None = None
    delay: float = 0.0
    strip_range: bool = False
    hits: int = 0

    def matches(self, method: str, target: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return re.search(self.pattern, target) is not None


@dataclass
class Seen:
    time: float  # time.monotonic() when the request head was read
    method: str
    target: str
    headers: dict[str, str]  # lower-cased names; the last value wins
    action: str = "forward"
    status: int | None = None  # what the upstream (or the fault) answered; None when nothing was
    raw_headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


class _Closed(Exception):
    pass


def _read_head(sock: socket.socket, buf: bytearray) -> bytes:
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise _Closed
        buf += data
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    del buf[:end]
    return head


def _read_exact(sock: socket.socket, buf: bytearray, n: int) -> bytes:
    while len(buf) < n:
        data = sock.recv(max(65536, n - len(buf)))
        if not data:
            raise _Closed
        buf += data
    out = bytes(buf[:n])
    del buf[:n]
    return out


def _parse_headers(lines: list[bytes]) -> list[tuple[str, str]]:
    out = []
    for line in lines:
        if b":" in line:
            name, _, value = line.decode("latin-1").partition(":")
            out.append((name.strip(), value.strip()))
    return out


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    found = [v for k, v in headers if k.lower() == name]
    return found[-1] if found else None


def _head_bytes(first: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [first] + [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rules: list[Rule] = []
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self.port: int | None = None

    # -- programming ------------------------------------------------------------------------
    def add(self, pattern: str, **kwargs) -> Rule:
        rule = Rule(pattern, **kwargs)
        with self._lock:
            self.rules.append(rule)
        return rule

    def reset(self) -> None:
        with self._lock:
            self.rules.clear()
            self.seen.clear()

    def requests(self, pattern: str = "", method: str | None = None) -> list[Seen]:
        with self._lock:
            seen = list(self.seen)
        return [s for s in seen if re.search(pattern, s.target)
                and (method is None or s.method.upper() == method.upper())]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> FaultProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self._listener, self.port = listener, listener.getsockname()[1]
        thread = threading.Thread(target=self._accept, name="faultproxy-accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            _close(conn)
        for thread in list(self._threads):
            thread.join(5)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self._conns.add(conn)
                self._threads = [t for t in self._threads if t.is_alive()]
            thread = threading.Thread(target=self._serve, args=(conn,), name="faultproxy-conn", daemon=True)
            self._threads.append(thread)
            thread.start()

    # -- one client connection ----------------------------------------------------------------
    def _serve(self, conn: socket.socket) -> None:
        buf = bytearray()
        try:
            while not self._stopping.is_set():
                if not self._one(conn, buf):
                    break
        except (_Closed, OSError):
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            _close(conn)

    def _one(self, conn: socket.socket, buf: bytearray) -> bool:
        """Handle one request; False when the client connection must close."""
        head = _read_head(conn, buf)
        lines = head.split(b"\r\n")[:-2]
        method, target, _version = lines[0].decode("latin-1").split(" ", 2)
        headers = _parse_headers(lines[1:])
        length = int(_header(headers, "content-length") or 0)
        body = _read_exact(conn, buf, length) if length else b""
        with self._lock:
            rule = next((r for r in self.rules if r.matches(method, target)), None)
            if rule is not None:
                rule.hits += 1
            seen = Seen(time.monotonic(), method, target, {k.lower(): v for k, v in headers},
                        raw_headers=headers)
            self.seen.append(seen)
        if rule is None:
            return self._forward(conn, seen, method, target, headers, body)
        seen.action = _describe(rule)
        if rule.delay:
            time.sleep(rule.delay)
        if rule.refuse:
            return False
        if rule.respond is not None:
            status, extra, payload = rule.respond
            seen.status = status
            out = [*extra.items(), ("Content-Length", str(len(payload)))]
            conn.sendall(_head_bytes(f"HTTP/1.1 {status} Fault", out) + payload)
            return True
        if rule.strip_range:
            headers = [(k, v) for k, v in headers if k.lower() != "range"]
        return self._forward(conn, seen, method, target, headers, body, cut_after=rule.cut_after,
                             drop=rule.drop_response)

    def _forward(self, conn, seen, method, target, headers, body, *, cut_after=None, drop=False) -> bool:
        upstream = socket.create_connection(self.upstream, timeout=30)
        try:
            out = [(k, v) for k, v in headers if k.lower() not in HOP] + [("Connection", "close")]
            upstream.sendall(_head_bytes(f"{method} {target} HTTP/1.1", out) + body)
            ubuf = bytearray()
            head = _read_head(upstream, ubuf)
            lines = head.split(b"\r\n")[:-2]
            status_line = lines[0].decode("latin-1")
            seen.status = int(status_line.split(" ", 2)[1])
            rheaders = _parse_headers(lines[1:])
            length = _header(rheaders, "content-length")
            keep = length is not None or method.upper() == "HEAD"
            rheaders = [(k, v) for k, v in rheaders if k.lower() not in HOP]
            if not keep:
                rheaders.append(("Connection", "close"))
            if drop:
                _drain(upstream, ubuf, None if length is None else int(length))
                return False
            conn.sendall(_head_bytes(status_line, rheaders))
            if method.upper() == "HEAD":
                return True
            remaining = None if length is None else int(length)
            budget = cut_after
            while remaining is None or remaining > 0:
                if ubuf:
                    chunk = bytes(ubuf)
                    ubuf.clear()
                else:
                    chunk = upstream.recv(256 * 1024)
                    if not chunk:
                        break
                if remaining is not None:
                    chunk = chunk[:remaining]
                    remaining -= len(chunk)
                if budget is not None:
                    if len(chunk) >= budget:
                        conn.sendall(chunk[:budget])
                        return False  # cut: close the client connection mid-body
                    budget -= len(chunk)
                conn.sendall(chunk)
            return keep
        finally:
            _close(upstream)


def _drain(sock: socket.socket, buf: bytearray, length: int | None) -> None:
    got = len(buf)
    while length is None or got < length:
        data = sock.recv(256 * 1024)
        if not data:
            return
        got += len(data)


def _describe(rule: Rule) -> str:
    parts = [name for name in ("refuse", "drop_response", "strip_range") if getattr(rule, name)]
    if rule.respond is not None:
        parts.append(f"respond {rule.respond[0]}")
    if rule.cut_after is not None:
        parts.append(f"cut_after {rule.cut_after}")
    if rule.delay:
        parts.append(f"delay {rule.delay}")
    return ", ".join(parts) or "forward"


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


# -- a second origin: the "download host" -----------------------------------------------------
class FileHost:
    """A tiny HTTP server on 127.0.0.1 serving one file at any path, recording request headers.

    It honours ``Range: bytes=N-`` (206), so resumed downloads work against it too.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.seen: list[dict[str, str]] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                host.seen.append({k.lower(): v for k, v in self.headers.items()} | {":path": self.path})
                data = host.path.read_bytes()
                found = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
                start = int(found.group(1)) if found else 0
                if found and start < len(data):
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                    start = 0
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, name="filehost", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FileHost:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
