"""The client over real sockets, through a fault-injecting proxy (``faultproxy.py``).

One real server for the module: ``create_app`` over a temporary data dir, served by uvicorn in a
background thread on 127.0.0.1 (workers included). Each test gets its own user and its own proxy
in front of that server; the client only ever talks to the proxy (and, for the credential tests,
to a second origin, the "download host").
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn

try:
    from faultproxy import FaultProxy, FileHost
except ImportError:  # tests/ made a package
    from tests.faultproxy import FaultProxy, FileHost

from sorakit.client import AsyncSoraClient, RetryPolicy, SoraClient, errors
from sorakit.config import load_settings
from sorakit.server import auth
from sorakit.server.app import create_app
from sorakit.server.services import Services, build_services

FAST = {"poll_interval": (0.05, 0.1), "poll_max": 0.2, "retry": RetryPolicy(wait=False)}
BIG = 3 * 1024 * 1024
XML_403 = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code>'
           b"<Message>Server failed to authenticate the request. Signed expiry time has passed.</Message></Error>")
CREDENTIAL_HEADERS = ("authorization", "cookie", "oai-device-id", "openai-sentinel-token")


@dataclass
class Server:
    url: str
    port: int
    services: Services
    _users: int = 0

    def user(self) -> tuple[str, str]:
        """A fresh user: ``(user_id, token)``. Tests never see each other's tasks."""
        store = self.services.store
        self._users += 1
        user = store.create_user(f"user{self._users}-{os.urandom(3).hex()}")
        token, _ = auth.issue(store, self.services.jwt_key, user["id"], 3600)
        return user["id"], token

    def tasks_of(self, user_id: str) -> list[str]:
        from sqlalchemy import select

        from sorakit.store.schema import tasks

        with self.services.store.engine.connect() as conn:
            return list(conn.execute(select(tasks.c.id).where(tasks.c.user_id == user_id)).scalars())

    def media(self, gen_id: str) -> Path:
        return self.services.settings.media_dir / gen_id / "video.mp4"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("faults-data")
    settings = load_settings({"data_dir": data, "workers": 2, "default_concurrency": 20,
                              "finished_window_seconds": 300}, env={})
    services = build_services(settings)
    app = create_app(settings, services=services)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Server(f"http://127.0.0.1:{port}", port, services)
    finally:
        uv.should_exit = True
        thread.join(15)
        sock.close()
        assert not thread.is_alive()


@pytest.fixture
def proxy(server):
    with FaultProxy(server.port) as p:
        yield p


@pytest.fixture
def user(server):
    return server.user()


@pytest.fixture
def client(proxy, user):
    with SoraClient(proxy.url, user[1], **FAST) as c:
        yield c


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def big_video(server: Server, client: SoraClient, size: int = BIG) -> dict:
    """A finished draft whose video file the test then replaces with ``size`` random bytes."""
    task = client.wait(client.create(f"big {os.urandom(4).hex()}", n_frames=1)["id"])
    draft = task["generations"][0]
    server.media(draft["id"]).write_bytes(os.urandom(size))
    return client.draft(draft["id"])


def asset_requests(proxy: FaultProxy):
    return proxy.requests(r"^/assets/")


def range_start(seen) -> int | None:
    found = re.match(r"bytes=(\d+)-$", seen.headers.get("range", ""))
    return int(found.group(1)) if found else None


# -- downloads ------------------------------------------------------------------------------------
def test_a_cut_body_is_resumed_with_range(server, proxy, client, tmp_path):
    draft = big_video(server, client)
    proxy.add(r"^/assets/", cut_after=1_500_000)
    sha = client.download(draft, tmp_path / "v.mp4")
    assert sha == sha256(server.media(draft["id"])) == sha256(tmp_path / "v.mp4")
    first, second = asset_requests(proxy)
    assert first.action == "cut_after 1500000" and range_start(first) is None
    assert 0 < range_start(second) <= 1_500_000 and second.status == 206
    assert not (tmp_path / "v.mp4.part").exists()


def test_the_async_client_resumes_too(server, proxy, user, client, tmp_path):
    import asyncio

    draft = big_video(server, client)
    proxy.add(r"^/assets/", cut_after=1_200_000)

    async def main():
        async with AsyncSoraClient(proxy.url, user[1], **FAST) as c:
            return await c.download(draft, tmp_path / "a.mp4")

    assert asyncio.run(main()) == sha256(server.media(draft["id"]))
    assert range_start(asset_requests(proxy)[1]) > 0


def test_every_byte_that_arrived_counts_when_connections_keep_breaking(server, proxy, client, tmp_path):
    draft = big_video(server, client, 2 * 1024 * 1024)
    proxy.add(r"^/assets/", cut_after=400_000, times=None)  # every answer breaks after 400 kB
    sha = client.download(draft, tmp_path / "v.mp4")
    assert sha == sha256(server.media(draft["id"]))
    starts = [range_start(s) or 0 for s in asset_requests(proxy)]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)


def test_an_ignored_range_starts_the_file_over(server, proxy, client, tmp_path):
    draft = big_video(server, client)
    proxy.add(r"^/assets/", cut_after=1_500_000)
    proxy.add(r"^/assets/", strip_range=True)
    sha = client.download(draft, tmp_path / "v.mp4")
    assert sha == sha256(server.media(draft["id"]))
    assert (tmp_path / "v.mp4").stat().st_size == BIG
    first, second = asset_requests(proxy)[:2]
    assert range_start(second) > 0 and second.action == "strip_range" and second.status == 200


def test_a_link_that_expires_mid_download_is_refreshed(server, proxy, client, tmp_path):
    draft = big_video(server, client)
    path = f"/assets/{draft['id']}/video.mp4"
    short = proxy.url + server.services.signer.sign(path, ttl=2)  # valid for one to two seconds
    proxy.add(r"^/assets/", cut_after=1_500_000)
    proxy.add(r"^/assets/", delay=2.5)  # the resume reaches the server after the link expired
    sha = client.download({**draft, "url": short, "downloadable_url": short, "video_url": short,
                           "download_url": short}, tmp_path / "v.mp4")
    assert sha == sha256(server.media(draft["id"]))
    cut, refused, fresh = asset_requests(proxy)
    assert refused.status == 403 and range_start(refused) > 0
    assert fresh.status == 206 and range_start(fresh) == range_start(refused)
    sig = lambda s: re.search(r"sig=([^&]+)", s.target).group(1)  # noqa: E731
    assert sig(cut) == sig(refused) != sig(fresh)
    assert proxy.requests(rf"/drafts/v2/{draft['id']}$")  # the fresh link came from the draft


# -- polls -----------------------------------------------------------------------------------------
def test_polls_survive_500s_and_honour_429_retry_after(server, proxy, user):
    with SoraClient(proxy.url, user[1], poll_interval=(0.05, 0.1), poll_max=0.2,
                    retry=RetryPolicy(base=0.01, cap=0.5)) as c:
        task_id = c.create("through the storm", n_frames=1)["id"]
        proxy.add(r"^/backend/nf/pending/v2", respond=(500, {}, b'{"error": {"message": "oops"}}'), times=2)
        envelope = b'{"error": {"message": "slow down", "code": null}}'
        proxy.add(r"^/backend/nf/pending/v2", respond=(429, {"Retry-After": "1"}, envelope), times=1)
        task = c.wait(task_id)
    assert task["status"] == "succeeded"
    polls = proxy.requests(r"^/backend/nf/pending/v2")
    assert [p.status for p in polls[:4]] == [500, 500, 429, 200]
    assert polls[1].time - polls[0].time < 0.5  # no Retry-After: short backoff
    assert polls[3].time - polls[2].time >= 0.95  # Retry-After: 1 was honoured


# -- creates -----------------------------------------------------------------------------------------
def test_a_create_whose_answer_is_lost_makes_one_task(server, proxy, user, client):
    proxy.add(r"^/backend/nf/create$", method="POST", drop_response=True)
    task = client.create("the answer got lost", n_frames=1)
    assert server.tasks_of(user[0]) == [task["id"]]
    assert proxy.requests(r"^/backend/nf/create$")[0].status == 200  # the server did make it
    assert client.wait(task["id"])["status"] == "succeeded"


def test_a_lost_create_is_retried_with_the_same_idempotency_key(server, proxy, user, client):
    proxy.add(r"^/backend/nf/create$", method="POST", drop_response=True)
    proxy.add(r"^/backend/nf/pending/v2", respond=(500, {}, b"{}"), times=5)  # nothing to look in
    task = client.create("retried with its key", n_frames=1)
    creates = proxy.requests(r"^/backend/nf/create$")
    assert len(creates) == 2
    keys = {c.headers.get("idempotency-key") for c in creates}
    assert len(keys) == 1 and None not in keys
    assert server.tasks_of(user[0]) == [task["id"]]


def test_a_create_that_never_arrived_does_not_adopt_an_earlier_task(server, proxy, user, client):
    first = client.create("four takes of the same prompt", n_frames=1)
    proxy.add(r"^/backend/nf/create$", method="POST", refuse=True)  # closed before forwarding
    second = client.create("four takes of the same prompt", n_frames=1)
    assert len(server.tasks_of(user[0])) == 2
    assert second["id"] != first["id"]


def test_a_503_create_honours_retry_after(server, proxy, user):
    heavy = (b'{"error": {"message": "We\'re under heavy load, please try again later.", '
             b'"type": "server_error", "param": null, "code": "server_overloaded"}}')
    proxy.add(r"^/backend/nf/create$", method="POST", respond=(503, {"Retry-After": "1"}, heavy))
    with SoraClient(proxy.url, user[1], retry=RetryPolicy(base=0.01, cap=0.5)) as c:
        c.create("come back later", n_frames=1)
    first, second = proxy.requests(r"^/backend/nf/create$")
    assert second.time - first.time >= 0.95


# -- credentials stay with the API -----------------------------------------------------------------------
def browser_client(proxy: FaultProxy, token: str) -> SoraClient:
    return SoraClient(proxy.url, token, cookie="oai-did=6f1b6c2e; __Secure-next-auth.session-token=SESSION",
                      device_id="6f1b6c2e-3a4d-4e8f-9b0a-1c2d3e4f5a6b", sentinel_token='{"p": "SENTINEL"}',
                      user_agent="Mozilla/5.0 test", **FAST)


def test_credentials_never_reach_a_download_host(server, proxy, user, tmp_path):
    payload = tmp_path / "hosted.mp4"
    payload.write_bytes(os.urandom(300_000))
    with FileHost(payload) as host, browser_client(proxy, user[1]) as c:
        task = c.wait(c.create("hosted elsewhere", n_frames=1)["id"])
        api_calls = proxy.requests(r"^/backend/")
        assert all(s.headers.get("authorization") == f"Bearer {user[1]}" for s in api_calls)
        assert all("SESSION" in s.headers.get("cookie", "") for s in api_calls)
        assert any(s.headers.get("openai-sentinel-token") for s in api_calls if s.method == "POST")

        url = host.url + "/blob/video.mp4?se=2099-01-01T00%3A00%3A00Z&sp=r&sig=abc"
        draft = {**task["generations"][0], "url": url, "downloadable_url": url, "video_url": url,
                 "download_url": url}
        assert c.download(draft, tmp_path / "v.mp4") == sha256(payload)
    assert len(host.seen) == 1
    for seen in host.seen:
        leaked = [h for h in CREDENTIAL_HEADERS if h in seen]
        assert not leaked, f"the download host received {leaked}"
        assert user[1] not in str(seen) and "SESSION" not in str(seen) and "SENTINEL" not in str(seen)


def test_a_redirect_to_another_host_carries_no_credentials(server, proxy, user, tmp_path):
    payload = tmp_path / "moved.mp4"
    payload.write_bytes(os.urandom(200_000))
    with FileHost(payload) as host, browser_client(proxy, user[1]) as c:
        task = c.wait(c.create("moved elsewhere", n_frames=1)["id"])
        proxy.add(r"^/assets/", respond=(302, {"Location": host.url + "/moved.mp4?sig=xyz"}, b""))
        assert c.download(task["generations"][0], tmp_path / "v.mp4") == sha256(payload)
    assert asset_requests(proxy)[0].status == 302
    assert [s[":path"] for s in host.seen] == ["/moved.mp4?sig=xyz"]
    for seen in host.seen:
        assert not [h for h in CREDENTIAL_HEADERS if h in seen]
        assert user[1] not in str(seen)
    # nor did the asset request itself carry any: links are capabilities
    assert not [h for h in CREDENTIAL_HEADERS if h in asset_requests(proxy)[0].headers]


# -- secrets never reach output ------------------------------------------------------------------------
def refused_download(server, proxy, user, tmp_path):
    """A download whose link is refused every time (4 times: the first and 3 fresh links)."""
    c = SoraClient(proxy.url, user[1], **FAST)
    with c:
        task = c.wait(c.create("refused forever", n_frames=1)["id"])
        proxy.add(r"^/assets/", respond=(403, {"Content-Type": "application/xml"}, XML_403), times=None)
        with pytest.raises(errors.DownloadError) as info:
            c.download(task["generations"][0], tmp_path / "never.mp4")
    sigs = {re.search(r"sig=([^&]+)", s.target).group(1) for s in asset_requests(proxy)}
    assert len(asset_requests(proxy)) == 4 and sigs  # links minted within a second are equal
    return info.value, sigs


def test_tokens_and_signatures_never_appear_in_errors_or_output(server, proxy, user, tmp_path, capsys):
    exc, sigs = refused_download(server, proxy, user, tmp_path)
    out, err = capsys.readouterr()
    shown = "\n".join([str(exc), repr(exc), exc.message, "".join(traceback.format_exception(exc)), out, err])
    assert "403" in str(exc)
    assert user[1] not in shown
    for sig in sigs:
        assert sig not in shown
    # an API error on the same path: the token is in the request, never in the error
    with SoraClient(proxy.url, user[1] + "x", **FAST) as c, pytest.raises(errors.InvalidTokenError) as info:
        c.usage()
    assert user[1] not in str(info.value) and user[1] not in repr(info.value)


def test_tokens_and_signatures_never_appear_in_logs(server, proxy, user, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    exc, sigs = refused_download(server, proxy, user, tmp_path)
    logged = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert user[1] not in logged
    for sig in sigs:
        assert sig not in logged, "a link signature was logged"


def test_a_busy_download_honours_retry_after(server, proxy, user, tmp_path):
    with SoraClient(proxy.url, user[1], poll_interval=(0.05, 0.1), poll_max=0.2,
                    retry=RetryPolicy(base=0.01, cap=0.5)) as c:
        draft = big_video(server, c, 500_000)
        proxy.add(r"^/assets/", respond=(503, {"Retry-After": "1"}, b"busy"))
        proxy.add(r"^/assets/", respond=(500, {}, b"oops"))
        assert c.download(draft, tmp_path / "v.mp4") == sha256(server.media(draft["id"]))
    busy, broken, ok = asset_requests(proxy)
    assert (busy.status, broken.status, ok.status) == (503, 500, 200)
    assert broken.time - busy.time >= 0.95 and ok.time - broken.time < 0.5
