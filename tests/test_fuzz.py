"""Fuzz every operation of the OpenAPI document against the real app, in-process (no network).

Operations come from the document itself, so a route added later is fuzzed without touching this
file. Each response must not be a 5xx, must use a status the document lists, and when it is an
error must be the JSON envelope of PROTOCOL section 6 (``/assets`` answers XML by design).

Two passes: signed in with a valid token, so routes are exercised past the token check (and
schemathesis' ``ignored_auth`` check resends a successful call without a token and with a bad
one); then anonymous, with no token or the one schemathesis made up.

The run is deterministic (fixed seed, no example database) so the suite cannot flake; to fuzz
harder, raise the example counts or point ``st run`` at a live server.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import ignored_auth, status_code_conformance, unsupported_method

from conftest import ERROR_KEYS
from sorakit.config import load_settings
from sorakit.server.app import create_app
from sorakit.server.services import build_services

SIGNED_IN_EXAMPLES = 40  # per operation
ANONYMOUS_EXAMPLES = 8  # per operation: past a missing token there is little left to explore
SEED = 20260924
XML_PREFIXES = ("/assets/",)
# One app per operation on purpose: its state (tasks created, say) carries over between examples.
SHARED_APP = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


class AsServed:
    """The app as a server would run it, for schemathesis to call.

    HTTP only: the test's own TestClient runs the lifespan (workers), so schemathesis must not
    start a second one that it would stop only at exit. And an error the app re-raises after its
    500 answer went out (Starlette does, for the server's log) stays here, as a server keeps it:
    the check then sees the 500 the client got.
    """

    def __init__(self, app) -> None:
        self.app = app
        self.requests = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return  # returning at once is how an app says it has no lifespan
        self.requests += 1
        started = False

        async def tracked(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            if not started:
                raise


@pytest.fixture
def fuzz_api(make_api):
    # No workers: tasks stay queued, so limits high enough that create is not all 429s.
    return make_api(workers=0, default_concurrency=100_000, default_daily_limit=100_000)


@pytest.fixture
def fuzz_app(fuzz_api, request):
    app = AsServed(fuzz_api.app)
    yield app
    print(f"{request.node.name}: {app.requests} requests")


def error_envelope(_ctx, response, case) -> None:
    """Every error is the JSON envelope, except the XML refusals of signed links."""
    if response.status_code < 400 or case.operation.path.startswith(XML_PREFIXES):
        return
    body = response.json() if response.content else None
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"not the envelope: {body!r}"
    assert set(body["error"]) >= ERROR_KEYS, f"envelope lacks keys: {body!r}"
    assert body.get("status") == response.status_code, f"envelope status differs: {body!r}"


CHECKS = [not_a_server_error, status_code_conformance, ignored_auth, unsupported_method, error_envelope]


def _document() -> dict:
    """The app's OpenAPI document, read at collection so that each operation is its own test.
    (schemathesis' fixture-based lazy loading does not work with pytest 9's node ids.)"""
    with tempfile.TemporaryDirectory() as tmp:
        config = load_settings({"data_dir": Path(tmp), "workers": 0})
        return create_app(config, services=build_services(config, engines={})).openapi()


schema = schemathesis.openapi.from_dict(_document(), config=schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"mode": "all", "max-examples": SIGNED_IN_EXAMPLES, "database": "none",
                   "deterministic": True},
    "phases": {"stateful": {"enabled": False}},
}))


def _send(case, app: AsServed, headers: dict | None) -> None:
    # The document came from another app at collection: this test's app must answer, schemathesis'
    # own auth probes included (they go through the operation's schema).
    case.operation.app = case.operation.schema.app = app
    case.call_and_validate(headers=headers, checks=CHECKS)


@schema.parametrize()
@SHARED_APP
def test_fuzz_signed_in(case, fuzz_api, fuzz_app):
    _send(case, fuzz_app, fuzz_api.alice)


@schema.parametrize()
@settings(SHARED_APP, max_examples=ANONYMOUS_EXAMPLES)
def test_fuzz_anonymous(case, fuzz_app):
    _send(case, fuzz_app, None)


def test_asset_link_with_non_ascii_signature_is_refused(fuzz_api):
    response = fuzz_api.client.get("/assets/gen_x/video.mp4", params={"se": "0", "sp": "r", "sig": "\u0080"})
    assert response.status_code == 403
