"""Issue 8, items 1, 3 and 4: bodies are bounded while read, authenticated before read, and every
field is bounded; refusals are 400/401/413 envelopes that name the field and never echo it."""

from __future__ import annotations

import json
import select
import socket
import time

import pytest

from conftest import assert_error

try:
    from serverproc import ServerProcess
except ImportError:  # pragma: no cover
    from tests.serverproc import ServerProcess

DEEP = 300
FILE_PART = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
             b"Content-Type: image/png\r\n\r\n")


def post_raw(api, body: str | bytes, headers=None):
    headers = {**(headers or api.alice), "Content-Type": "application/json"}
    return api.client.post("/backend/nf/create", content=body, headers=headers)


# -- item 3: client mistakes that used to be 500s -------------------------------------------------
@pytest.mark.parametrize("field", ["metadata", "an_unknown_field"])
def test_json_nested_hundreds_of_levels_is_a_400_naming_the_field(api, field):
    body = '{"prompt": "x", "%s": %s%s}' % (field, "[" * DEEP, "]" * DEEP)
    error = assert_error(post_raw(api, body), 400, "invalid_request")
    assert error["param"].startswith(field) and "levels deep" in error["message"]


def test_json_nested_past_the_parser_limit_is_a_400(api):
    body = '{"prompt": "x", "metadata": %s%s}' % ("[" * 100_000, "]" * 100_000)
    assert_error(post_raw(api, body), 400, "invalid_request")


@pytest.mark.parametrize("body, param", [
    ('{"prompt": "x", "metadata": {"\\ud800": 1}}', "metadata.\\ud800"),
    ('{"prompt": "x", "\\udfff": 1}', "\\udfff"),
    ('{"prompt": "x", "inpaint_items": [{"kind": "upload", "upload_id": "\\ud800"}]}',
     "inpaint_items[0].upload_id"),
    ('{"prompt": "a \\ud800 b"}', "prompt"),
])
def test_lone_surrogates_anywhere_are_a_400_naming_where(api, body, param):
    error = assert_error(post_raw(api, body), 400, "invalid_request", param)
    assert "Unicode" in error["message"]


def test_the_task_table_is_untouched_by_refused_bodies(api):
    post_raw(api, '{"prompt": "x", "metadata": {"\\ud800": 1}}')
    assert api.client.get("/backend/nf/pending/v2", headers=api.alice).json() == []


# -- item 4: every field bounded; errors name it and do not echo it -------------------------------
@pytest.mark.parametrize("field, size", [("title", 1_001), ("orientation", 201), ("model", 201),
                                         ("style_id", 201), ("audio_caption", 10_001)])
def test_known_fields_have_length_bounds(api, field, size):
    body = {"prompt": "x", field: "y" * size}
    r = post_raw(api, json.dumps(body))
    assert_error(r, 400, "invalid_request", field)
    assert "y" * 100 not in r.text  # named, not echoed


def test_a_10_mb_title_is_refused_before_it_is_stored(api):
    r = post_raw(api, json.dumps({"prompt": "x", "title": "t" * 10_000_000}))
    assert_error(r, 413, "request_too_large")
    assert len(r.content) < 1000


def test_unknown_fields_are_kept_within_a_budget(api):
    ok = post_raw(api, json.dumps({"prompt": "x", "client_note": "n" * 1000}))
    assert ok.status_code == 200, ok.text
    too_much = post_raw(api, json.dumps({"prompt": "x", "a": "n" * 10_000, "b": "m" * 10_000}))
    error = assert_error(too_much, 400, "invalid_request")
    assert error["param"] in ("a", "b") and "n" * 50 not in too_much.text


@pytest.mark.parametrize("shape", [
    {"prompt": "x", "metadata": list(range(101))},
    {"prompt": "x", "metadata": {f"k{i}": i for i in range(101)}},
    {"prompt": "x", "metadata": {"k" * 201: 1}},
    {"prompt": "x", "inpaint_items": [{"kind": "upload"}] * 11},
])
def test_lists_objects_and_keys_are_bounded(api, shape):
    assert_error(post_raw(api, json.dumps(shape)), 400, "invalid_request")


def test_a_bad_enum_value_is_quoted_short(api):
    r = post_raw(api, json.dumps({"prompt": "x", "orientation": "z" * 150}))
    error = assert_error(r, 400, "invalid_request", "orientation")
    assert len(error["message"]) < 200


def test_curl_form_content_type_still_parses_as_json(api):
    r = api.client.post("/backend/nf/create", content=json.dumps({"prompt": "from curl -d"}),
                        headers={**api.alice, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("body, message", [(b"", "empty"), (b"{not json", "not valid JSON"),
                                           (b"[1, 2]", "JSON object"), (b"\xff\xfe\x00", "not valid JSON")])
def test_malformed_bodies_are_400s(api, body, message):
    error = assert_error(post_raw(api, body), 400, "invalid_request")
    assert message in error["message"]


# -- item 1: size limits and authentication before the body --------------------------------------
def test_declared_oversize_body_is_refused_with_413(api):
    r = api.client.post("/backend/nf/create", content=b"x" * (300 * 1024), headers=api.alice)
    assert_error(r, 413, "request_too_large")


def test_unauthenticated_body_gets_401_not_413_and_no_parsing(api):
    r = api.client.post("/backend/nf/create", content=b"{not json", headers={"Content-Type": "application/json"})
    assert_error(r, 401, "invalid_token")


def test_chunked_body_is_counted_while_read(api):
    def chunks():
        for _ in range(40):
            yield b"x" * 16_384  # 640 KB in all, no Content-Length

    r = api.client.post("/backend/nf/create", content=chunks(), headers=api.alice)
    assert_error(r, 413, "request_too_large")


def test_limit_is_a_setting(make_api):
    api = make_api(max_body_bytes=32 * 1024)
    r = post_raw(api, json.dumps({"prompt": "x", "title": "t" * 900, "a": "b" * 40_000}))
    assert_error(r, 413, "request_too_large")


def _rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _head(port: int, lines: list[str]) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def _answer_without_sending_body(sock: socket.socket) -> bytes:
    ready, _, _ = select.select([sock], [], [], 5)
    assert ready, "the server waited for the body instead of answering"
    return sock.recv(65536)


def _stream_until_answer(sock: socket.socket, total: int, chunk: bytes,
                         prelude: bytes = b"") -> tuple[int, bytes]:
    """Send chunked data until the server answers; returns (bytes sent, answer)."""
    sent = 0
    try:
        if prelude:
            sock.sendall(b"%x\r\n%s\r\n" % (len(prelude), prelude))
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent += len(chunk)
        return sent, sock.recv(65536)
    except (BrokenPipeError, ConnectionResetError):
        return sent, b""  # the server closed on us: refused, which is what we wanted


@pytest.mark.slow
def test_100_mb_bodies_cost_the_server_no_memory(tmp_path):
    with ServerProcess(tmp_path / "data", args=["--workers", "0"]) as server:
        pid, port = server.pid, server.port
        before = _rss_kb(pid)
        hundred_mb = 100 * 1024 * 1024
        # No token, a declared 100 MB: 413 from the headers alone.
        sock = _head(port, ["POST /backend/nf/create HTTP/1.1", "Host: x", f"Content-Length: {hundred_mb}"])
        assert b" 413 " in _answer_without_sending_body(sock).split(b"\r\n")[0]
        sock.close()
        # No token, chunked (no length to judge by): 401 before a byte of body is sent.
        for path in ("/backend/nf/create", "/backend/uploads"):
            sock = _head(port, [f"POST {path} HTTP/1.1", "Host: x", "Transfer-Encoding: chunked"])
            assert b" 401 " in _answer_without_sending_body(sock).split(b"\r\n")[0]
            sock.close()
        # With a token, 100 MB chunked: refused once the limit is passed, long before the end.
        for path in ("/backend/nf/create", "/backend/uploads"):
            sock = _head(port, [f"POST {path} HTTP/1.1", "Host: x", "Transfer-Encoding: chunked",
                                f"Authorization: Bearer {server.token}",
                                "Content-Type: application/json" if "create" in path else
                                "Content-Type: multipart/form-data; boundary=b"])
            prelude = b"" if "create" in path else FILE_PART
            sent, answer = _stream_until_answer(sock, hundred_mb, b"x" * (1024 * 1024), prelude)
            sock.close()
            assert sent < 40 * 1024 * 1024, f"the server read {sent} bytes of {path}"
            assert not answer or b" 413 " in answer.split(b"\r\n")[0], answer[:200]
        time.sleep(0.5)
        grown_mb = (_rss_kb(pid) - before) / 1024
        assert grown_mb < 40, f"server memory grew by {grown_mb:.0f} MB"
        assert server.request("GET", "/healthz").status_code == 200
