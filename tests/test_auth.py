"""PROTOCOL section 1: the three 401 codes, revocation, and isolation between users."""

from __future__ import annotations

import time

import jwt
import pytest
from conftest import assert_error

from sorakit.server import auth

PROTECTED = [("GET", "/backend/nf/pending/v2"), ("GET", "/backend/nf/check"),
             ("GET", "/backend/project_y/profile/drafts"), ("POST", "/backend/nf/create")]


@pytest.mark.parametrize("method,path", PROTECTED)
def test_missing_token_is_invalid_token(api, method, path):
    error = assert_error(api.client.request(method, path, json={"prompt": "x"}), 401, "invalid_token")
    assert error["message"].startswith("Could not parse your authentication token")


@pytest.mark.parametrize("header", ["Bearer", "Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "eyJhbGciOi"])
def test_unparsable_tokens_are_invalid_token(api, header):
    r = api.client.get("/backend/nf/pending/v2", headers={"Authorization": header})
    assert_error(r, 401, "invalid_token")


def test_token_signed_by_someone_else_is_invalid(api):
    forged = jwt.encode({"sub": "user_x", "jti": "tok_x", "exp": time.time() + 60}, b"k" * 32, algorithm="HS256")
    assert_error(api.client.get("/backend/nf/check", headers={"Authorization": f"Bearer {forged}"}),
                 401, "invalid_token")


def test_expired_token(api):
    store = api.services.store
    user = store.user_by_name("alice")
    real_clock = store.clock
    store.clock = lambda: real_clock() - 7200  # issue it two hours ago, valid for one
    token, _ = auth.issue(store, api.services.jwt_key, user["id"], 3600)
    store.clock = real_clock
    r = api.client.get("/backend/nf/check", headers={"Authorization": f"Bearer {token}"})
    assert_error(r, 401, "token_expired")


def test_revoked_token_is_invalidated(api):
    store = api.services.store
    token, row = auth.issue(store, api.services.jwt_key, store.user_by_name("alice")["id"], 3600)
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.get("/backend/nf/check", headers=headers).status_code == 200
    assert store.revoke_token(row["id"])
    error = assert_error(api.client.get("/backend/nf/check", headers=headers), 401, "token_invalidated")
    assert error["message"] == ("Your authentication token has been invalidated. "
                                "Please try signing in again.")
    assert api.client.get("/backend/nf/check", headers=api.alice).status_code == 200  # others unaffected


def test_users_see_only_their_own_tasks_drafts_and_links(api):
    task_id = api.create(n_frames=2).json()["id"]
    task = api.wait(task_id)
    gen_id = task["generations"][0]["id"]
    c = api.client
    assert c.get("/backend/nf/pending/v2", headers=api.bob).json() == []
    assert c.get("/backend/project_y/profile/drafts", headers=api.bob).json()["items"] == []
    assert_error(c.get(f"/backend/nf/tasks/{task_id}/v2", headers=api.bob), 404, "not_found")
    assert_error(c.post(f"/backend/nf/tasks/{task_id}/cancel", headers=api.bob), 404, "not_found")
    assert_error(c.get(f"/backend/project_y/profile/drafts/v2/{gen_id}", headers=api.bob), 404, "not_found")
    assert_error(c.delete(f"/backend/project_y/profile/drafts/{gen_id}", headers=api.bob), 404, "not_found")
    # Bob cannot mint a link to Alice's video: the only links to it are in Alice's listings.
    bob_links = str(c.get("/backend/project_y/profile/drafts", headers=api.bob).json())
    assert gen_id not in bob_links
    assert c.get(f"/backend/project_y/profile/drafts/v2/{gen_id}", headers=api.alice).status_code == 200


def test_session_endpoint_answers_like_the_web_app(api):
    token = api.alice["Authorization"].split()[1]
    assert api.client.get("/api/auth/session").json() == {}
    api.client.cookies.set("__Secure-next-auth.session-token", "garbage")
    assert api.client.get("/api/auth/session").json() == {}
    api.client.cookies.clear()
    half = len(token) // 2
    api.client.cookies.set("__Secure-next-auth.session-token.0", token[:half])
    api.client.cookies.set("__Secure-next-auth.session-token.1", token[half:])
    body = api.client.get("/api/auth/session").json()
    api.client.cookies.clear()
    assert body["accessToken"] == token and body["user"]["name"] == "alice" and body["expires"]
