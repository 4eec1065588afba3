"""The profile (``/backend/me``, ``/backend/authenticate``), the sentinel stand-in, and prompt
enhancement against a real stub chat server on 127.0.0.1 (PROTOCOL sections 1 and 2)."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import assert_error
from sorakit.config import ConfigError, load_settings

ENHANCE = "/backend/editor/enhance_prompt"
SENTINEL = "/backend-api/sentinel/req"


# -- profile ---------------------------------------------------------------------------------------


@pytest.fixture
def api(make_api):
    return make_api(workers=0)


def test_me_and_authenticate_describe_the_token_user(api):
    store = api.services.store
    store.create_user("carol", email="carol@example.org", daily=7, concurrency=2)
    carol = api.headers_for("carol")
    for path in ("/backend/me", "/backend/authenticate"):
        body = api.client.get(path, headers=carol).json()
        user = store.user_by_name("carol")
        assert body["id"] == user["id"]
        assert body["username"] == body["name"] == "carol"
        assert body["email"] == "carol@example.org"
        assert body["created_at"] == user["created_at"] and body["picture"] is None
        assert body["plan"] == "sorakit" and body["daily_limit"] == 7 and body["concurrency_limit"] == 2
        alice = api.client.get(path, headers=api.alice).json()
        assert alice["name"] == "alice" and alice["email"] is None
        assert alice["daily_limit"] == api.settings.default_daily_limit


def test_profile_needs_a_token(api):
    for path in ("/backend/me", "/backend/authenticate"):
        assert_error(api.client.get(path), 401, "invalid_token")
        assert_error(api.client.get(path, headers={"Authorization": "Bearer nonsense"}), 401, "invalid_token")


# -- sentinel --------------------------------------------------------------------------------------


def test_sentinel_answers_its_own_token_without_auth(api):
    for kwargs in ({}, {"json": {"p": "gAAAAAC...", "id": "device", "flow": "sora_create"}},
                   {"content": b"not json at all", "headers": {"content-type": "text/plain"}}):
        r = api.client.post(SENTINEL, **kwargs)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"token", "persona", "turnstile", "proofofwork"}
        assert re.fullmatch(r"sorakit-no-sentinel-[0-9a-f]{32}", body["token"])
        assert body["persona"] == "chatgpt-freeaccount"
        assert body["turnstile"] == {"required": False, "dx": None}
        assert body["proofofwork"] == {"required": False, "seed": None, "difficulty": None}
    assert api.client.post(SENTINEL).json()["token"] != api.client.post(SENTINEL).json()["token"]


def test_sentinel_body_is_bounded(make_api):
    api = make_api(workers=0, max_body_bytes=16 * 1024)
    big = b"x" * (16 * 1024 + 1)
    assert_error(api.client.post(SENTINEL, content=big), 413, "request_too_large")

    def chunks():  # no Content-Length: counted while read
        for _ in range(20):
            yield b"y" * 1024

    assert_error(api.client.post(SENTINEL, content=chunks()), 413, "request_too_large")


# -- prompt enhancement ----------------------------------------------------------------------------


class StubChat:
    """A tiny OpenAI-compatible chat server: records each request, answers as told."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status, self.reply, self.delay, self.raw = 200, "A cinematic red kite.", 0.0, None
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                data = self.rfile.read(int(self.headers.get("content-length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                stub.requests.append({"path": self.path, "headers": headers, "body": json.loads(data)})
                time.sleep(stub.delay)
                body = stub.raw if stub.raw is not None else json.dumps({
                    "id": "chatcmpl-1", "object": "chat.completion",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": stub.reply}}]}).encode()
                try:
                    self.send_response(stub.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (the timeout test)
                    pass

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    server = StubChat()
    yield server
    server.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _enhance(api, **body):
    body.setdefault("prompt", "a red kite over a grey sea")
    return api.client.post(ENHANCE, json=body, headers=api.alice)


def test_enhance_without_an_enhancer_is_400(api):
    error = assert_error(_enhance(api), 400, "prompt_enhancer_not_configured")
    assert "prompt_enhancer_url" in error["message"]
    assert_error(api.client.post(ENHANCE, json={"prompt": "x"}), 401, "invalid_token")


def test_enhance_asks_the_configured_chat_endpoint(make_api, stub):
    api = make_api(workers=0, prompt_enhancer_url=stub.url + "/", prompt_enhancer_model="qwen-small",
                   prompt_enhancer_api_key="sk-local-secret")
    r = _enhance(api, expansion_level="long", duration_s=10, extra_key=[1, 2])
    assert r.status_code == 200, r.text
    assert r.json() == {"enhanced_prompt": "A cinematic red kite."}
    [seen] = stub.requests
    assert seen["path"] == "/v1/chat/completions"
    assert seen["headers"]["authorization"] == "Bearer sk-local-secret"
    assert seen["body"]["model"] == "qwen-small"
    system, user = seen["body"]["messages"]
    assert system["role"] == "system" and user == {"role": "user", "content": "a red kite over a grey sea"}
    assert "10 seconds" in system["content"] and "250 words" in system["content"]
    assert "camera" in system["content"] and "lighting" in system["content"]

    # any expansion level is accepted (unknown ones read as medium); no key, no Authorization
    api2 = make_api(workers=0, prompt_enhancer_url=stub.url)
    stub.reply = '  <think>plan it</think>\n"A kite, backlit, slow dolly-in."  '
    r = _enhance(api2, expansion_level="enormous", duration_s=None)
    assert r.status_code == 200 and r.json()["enhanced_prompt"] == "A kite, backlit, slow dolly-in."
    assert "authorization" not in stub.requests[-1]["headers"]
    assert "80 to 120 words" in stub.requests[-1]["body"]["messages"][0]["content"]
    assert stub.requests[-1]["body"]["model"] == "default"


def test_enhance_bad_bodies_are_400(make_api, stub):
    api = make_api(workers=0, prompt_enhancer_url=stub.url)
    for body, param in (({}, "prompt"), ({"prompt": ""}, "prompt"), ({"prompt": "x" * 10_001}, "prompt"),
                        ({"prompt": "x", "duration_s": -1}, "duration_s"),
                        ({"prompt": "x", "duration_s": "long"}, "duration_s"),
                        ({"prompt": "x", "expansion_level": 3}, "expansion_level")):
        assert_error(api.client.post(ENHANCE, json=body, headers=api.alice), 400, "invalid_request", param)
    assert stub.requests == []


def test_enhancer_failures_are_502(make_api, stub):
    api = make_api(workers=0, prompt_enhancer_url=stub.url, prompt_enhancer_timeout_seconds=1)
    stub.status = 500
    error = assert_error(_enhance(api), 502, "prompt_enhancer_failed")
    assert "HTTP 500" in error["message"] and "Traceback" not in error["message"]
    stub.status, stub.raw = 200, b"<html>not json</html>"
    assert_error(_enhance(api), 502, "prompt_enhancer_failed")
    stub.raw = json.dumps({"choices": []}).encode()
    assert_error(_enhance(api), 502, "prompt_enhancer_failed")
    stub.raw, stub.reply = None, "   "
    assert_error(_enhance(api), 502, "prompt_enhancer_failed")
    stub.reply, stub.delay = "late", 3.0
    started = time.monotonic()
    error = assert_error(_enhance(api), 502, "prompt_enhancer_failed")
    assert time.monotonic() - started < 2.5 and "1 seconds" in error["message"]


def test_unreachable_enhancer_is_502_quickly(make_api):
    api = make_api(workers=0, prompt_enhancer_url=f"http://127.0.0.1:{_free_port()}/v1")
    started = time.monotonic()
    error = assert_error(_enhance(api), 502, "prompt_enhancer_failed")
    assert time.monotonic() - started < 5
    assert "could not be reached" in error["message"] and "127.0.0.1" not in error["message"]


def test_enhance_is_moderated_both_ways(make_api, stub):
    api = make_api(workers=0, prompt_enhancer_url=stub.url, blocked_terms=["volcano"])
    refused = _enhance(api, prompt="an erupting Volcano")
    error = assert_error(refused, 400, "content_policy_violation", "prompt")
    assert "refused" in error["message"] and "volcano" not in error["message"].lower()
    assert stub.requests == []  # refused before anything was sent
    stub.reply = "A volcano erupts at dusk."
    error = assert_error(_enhance(api, prompt="a mountain at dusk"), 400, "content_policy_violation")
    assert "volcano" not in error["message"].lower() and len(stub.requests) == 1


def test_enhancer_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="prompt_enhancer_url"):
        load_settings({"prompt_enhancer_url": "ftp://example.org"})
    with pytest.raises(ConfigError, match="prompt_enhancer_timeout_seconds"):
        load_settings({"prompt_enhancer_timeout_seconds": 0})
    s = load_settings({"data_dir": tmp_path}, env={"SORAKIT_PROMPT_ENHANCER_URL": "http://127.0.0.1:8080/v1",
                           "SORAKIT_PROMPT_ENHANCER_MODEL": "m", "SORAKIT_PROMPT_ENHANCER_API_KEY": "k",
                           "SORAKIT_PROMPT_ENHANCER_TIMEOUT_SECONDS": "5"})
    assert (s.prompt_enhancer_url, s.prompt_enhancer_model, s.prompt_enhancer_api_key,
            s.prompt_enhancer_timeout_seconds) == ("http://127.0.0.1:8080/v1", "m", "k", 5.0)
