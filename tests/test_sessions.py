"""Web sign-in (issue 10): passwords, the NextAuth-style session cookie, sign-out, disabling,
CSRF, slowing down repeated failures, the users commands and serve's first start."""

from __future__ import annotations

import stat
from datetime import datetime

import pytest
from conftest import assert_error
from fastapi.testclient import TestClient
from sqlalchemy import inspect
from starlette.requests import Request
from typer.testing import CliRunner

from sorakit.cli import serve as serve_cli
from sorakit.cli.main import app as cli
from sorakit.config import load_settings
from sorakit.protocol.errors import ApiError
from sorakit.server import auth, sessions
from sorakit.server.app import create_app
from sorakit.server.services import build_services
from sorakit.store import open_store
from sorakit.store.db import sqlite_engine
from sorakit.store.migrations import MIGRATIONS, migrate

PASSWORD = "correct horse battery"
SECURE, PLAIN = sessions.SECURE_COOKIE, sessions.PLAIN_COOKIE
DAYS_30 = 30 * 86400


@pytest.fixture
def api(make_api):
    api = make_api(workers=0)
    with_password(api, "alice")
    return api


def with_password(api, name: str, password: str = PASSWORD) -> dict:
    store = api.services.store
    user = store.user_by_name(name) or store.create_user(name)
    store.set_password(user["id"], sessions.hash_password(password))
    return user


def signin(client, username="alice", password=PASSWORD, **kwargs):
    return client.post("/api/auth/signin", json={"username": username, "password": password}, **kwargs)


def set_cookies(response) -> list[str]:
    return response.headers.get_list("set-cookie")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def session_of(client, cookie: str, name: str = PLAIN) -> dict:
    client.cookies.clear()
    client.cookies.set(name, cookie)
    return client.get("/api/auth/session").json()


def cookie_value(response, name: str = PLAIN) -> str:
    header = next(h for h in set_cookies(response) if h.startswith(f"{name}="))
    return header.split(";")[0].split("=", 1)[1]


def cli_run(data_dir, *args, stdin: str | None = None):
    return CliRunner().invoke(cli, [*args, "--data-dir", str(data_dir)], input=stdin)


def move_clock(store, seconds: float) -> None:
    real = store.clock
    store.clock = lambda: real() + seconds


# -- the cookie --------------------------------------------------------------------------------
@pytest.mark.parametrize("base_url,name,secure", [
    ("http://localhost", SECURE, True), ("http://127.0.0.1:8000", SECURE, True),
    ("http://[::1]:8000", SECURE, True), ("https://testserver", SECURE, True),
    ("http://testserver", PLAIN, False), ("http://192.0.2.10:8000", PLAIN, False)])
def test_signin_sets_nextauths_cookie_for_the_origin(api, base_url, name, secure):
    client = TestClient(api.app, base_url=base_url)
    r = signin(client)
    assert r.status_code == 200, r.text
    user = api.services.store.user_by_name("alice")
    assert r.json() == {"ok": True, "user": {"id": user["id"], "name": "alice",
                                             "email": "alice@sorakit.local", "image": None}}
    [header] = set_cookies(r)
    attributes = {a.strip().split("=")[0].lower(): a.strip() for a in header.split(";")[1:]}
    assert header.startswith(f"{name}=")
    assert ("secure" in attributes) is secure
    assert "httponly" in attributes and attributes["samesite"].lower() == "samesite=lax"
    assert attributes["path"] == "Path=/" and attributes["max-age"] == f"Max-Age={DAYS_30}"
    assert r.headers["cache-control"] == "no-store"


def test_behind_a_tls_proxy_public_base_url_makes_the_cookie_secure(make_api):
    api = make_api(workers=0, public_base_url="https://videos.example.org")
    with_password(api, "alice")
    r = signin(TestClient(api.app, base_url="http://videos.example.org"))  # Host passed through
    assert set_cookies(r)[0].startswith(f"{SECURE}=") and "Secure" in set_cookies(r)[0]


def test_a_form_signs_in_too(api):
    r = api.client.post("/api/auth/signin", data={"username": "alice", "password": PASSWORD,
                                                  "csrfToken": "ignored"})
    assert r.status_code == 200 and r.json()["ok"] is True and set_cookies(r)


@pytest.mark.parametrize("username,password", [("alice", "wrong password"), ("nobody", PASSWORD)])
def test_wrong_password_or_unknown_user_is_one_401_without_a_cookie(api, username, password, monkeypatch):
    hashed = []
    real = sessions._scrypt
    monkeypatch.setattr(sessions, "_scrypt", lambda *a, **k: hashed.append(1) or real(*a, **k))
    r = signin(api.client, username, password)
    error = assert_error(r, 401, "invalid_credentials", param=None)
    assert error["message"] == "Wrong username or password."
    assert not set_cookies(r)
    assert len(hashed) == 1  # an unknown user costs one scrypt as well: its time tells nothing


def test_missing_fields_are_a_400_naming_them(api):
    assert_error(api.client.post("/api/auth/signin", json={"username": "alice"}), 400, "invalid_request",
                 param="password")


# -- the session -------------------------------------------------------------------------------
def test_session_answers_nextauths_shape_with_a_working_token(api):
    store = api.services.store
    bob = store.create_user("bob2", email="bob@example.org")
    with_password(api, "bob2")
    r = signin(api.client, "bob2")
    now = store.clock()
    first = api.client.get("/api/auth/session")
    body = first.json()
    assert first.headers["cache-control"] == "no-store"
    assert set(body) == {"user", "expires", "accessToken", "authProvider"}
    assert body["user"] == {"id": bob["id"], "name": "bob2", "email": "bob@example.org", "image": None}
    assert body["authProvider"] == "sorakit"
    expires = datetime.fromisoformat(body["expires"]).timestamp()
    assert abs(expires - (now + DAYS_30)) < 5 and body["expires"].endswith("Z")
    assert abs(auth.expiry(body["accessToken"]) - expires) < 1  # the token lives as long as the session
    assert api.client.get("/backend/nf/check", headers=bearer(body["accessToken"])).status_code == 200
    assert api.client.get("/api/auth/session").json()["accessToken"] == body["accessToken"]  # minted once
    row = store.session_by_hash(sessions._digest(cookie_value(r)))[0]
    assert row["id"].startswith("sess_") and row["token_hash"] != cookie_value(r)


def test_the_cookie_may_come_in_chunks(api):
    value = cookie_value(signin(api.client))
    api.client.cookies.clear()
    api.client.cookies.set(f"{SECURE}.0", value[:20])
    api.client.cookies.set(f"{SECURE}.1", value[20:])
    assert api.client.get("/api/auth/session").json()["user"]["name"] == "alice"


def test_no_or_bad_or_expired_session_is_an_empty_answer(api):
    assert api.client.get("/api/auth/session").json() == {}
    assert session_of(api.client, "not-a-session") == {}
    value = cookie_value(signin(api.client))
    move_clock(api.services.store, DAYS_30 + 1)
    assert session_of(api.client, value) == {}


def test_signout_ends_the_session_and_its_token(api):
    r = signin(api.client)
    value = cookie_value(r)
    token = api.client.get("/api/auth/session").json()["accessToken"]
    out = api.client.post("/api/auth/signout")
    assert out.status_code == 200 and out.json() == {"ok": True}
    cleared = {h.split("=")[0]: h for h in set_cookies(out)}
    assert set(cleared) == {SECURE, PLAIN}
    assert all("Max-Age=0" in h for h in cleared.values()) and "Secure" in cleared[SECURE]
    assert session_of(api.client, value) == {}
    assert_error(api.client.get("/backend/nf/check", headers=bearer(token)), 401, "token_invalidated")
    assert api.client.post("/api/auth/signout").json() == {"ok": True}  # without a session: 200 too


def test_signing_in_again_ends_the_browsers_previous_session(api):
    first = cookie_value(signin(api.client))
    token = api.client.get("/api/auth/session").json()["accessToken"]
    signin(api.client)
    assert session_of(api.client, first) == {}
    assert_error(api.client.get("/backend/nf/check", headers=bearer(token)), 401, "token_invalidated")


def test_disable_ends_sessions_and_refuses_every_token_at_once(api):
    value = cookie_value(signin(api.client))
    token = api.client.get("/api/auth/session").json()["accessToken"]
    r = cli_run(api.settings.data_dir, "users", "disable", "alice")
    assert r.exit_code == 0 and "1 session(s) ended" in r.output, r.output
    assert session_of(api.client, value) == {}
    for headers in (bearer(token), api.alice):  # the session's token and a `token create` one
        assert_error(api.client.get("/backend/nf/check", headers=headers), 401, "token_invalidated")
    assert_error(signin(api.client), 401, "invalid_credentials")
    assert api.client.get("/backend/nf/check", headers=api.bob).status_code == 200  # others unaffected
    assert cli_run(api.settings.data_dir, "users", "enable", "alice").exit_code == 0
    assert api.client.get("/backend/nf/check", headers=api.alice).status_code == 200
    assert_error(api.client.get("/backend/nf/check", headers=bearer(token)), 401, "token_invalidated")
    assert signin(api.client).status_code == 200


# -- cross-site requests -----------------------------------------------------------------------
@pytest.mark.parametrize("headers", [{"Origin": "https://evil.example"}, {"Origin": "null"},
                                     {"Origin": "https://testserver"}, {"Sec-Fetch-Site": "cross-site"}])
def test_a_page_of_another_site_cannot_sign_in_or_out(api, headers):
    r = signin(api.client, headers=headers)
    assert_error(r, 403, "cross_site_request")
    assert not set_cookies(r)
    value = cookie_value(signin(api.client))
    assert_error(api.client.post("/api/auth/signout", headers=headers), 403, "cross_site_request")
    assert session_of(api.client, value)["user"]["name"] == "alice"


@pytest.mark.parametrize("headers", [{}, {"Origin": "http://testserver"}, {"Origin": "HTTP://TestServer:80"},
                                     {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}])
def test_same_origin_and_scripts_without_origin_pass(api, headers):
    assert signin(api.client, headers=headers).status_code == 200


def test_public_base_url_is_an_own_origin(make_api):
    api = make_api(workers=0, public_base_url="https://videos.example.org/")
    with_password(api, "alice")
    assert signin(api.client, headers={"Origin": "https://videos.example.org"}).status_code == 200
    assert_error(signin(api.client, headers={"Origin": "https://videos.example.org.evil"}), 403,
                 "cross_site_request")


# -- slowing down ------------------------------------------------------------------------------
def test_a_name_is_locked_after_five_failures_and_the_lock_doubles(api):
    for _ in range(5):
        assert_error(signin(api.client, password="nope"), 401, "invalid_credentials")
    locked = signin(api.client)  # even the right password waits
    assert_error(locked, 429, "too_many_signin_attempts")
    assert 25 <= int(locked.headers["retry-after"]) <= 30 and not set_cookies(locked)
    assert signin(api.client, "bob").status_code == 401  # other names are not locked
    store = api.services.store
    move_clock(store, 31)
    assert_error(signin(api.client, password="nope"), 401, "invalid_credentials")
    assert 55 <= int(assert_error_headers(signin(api.client), 429)["retry-after"]) <= 60
    move_clock(store, 61)
    assert signin(api.client).status_code == 200  # and a success clears the name's counter
    for _ in range(4):
        signin(api.client, password="nope")
    assert signin(api.client, password="nope").status_code == 401


def assert_error_headers(response, status: int):
    assert response.status_code == status, response.text
    return response.headers


def test_an_address_is_locked_after_twenty_failures(api):
    for i in range(20):
        with pytest.raises(ApiError) as failed:
            sessions.sign_in(api.services, f"user{i}", "nope", "2001:db8::1")
        assert failed.value.code == "invalid_credentials"
    with pytest.raises(ApiError) as locked:  # the same /64, a name never tried
        sessions.sign_in(api.services, "alice", PASSWORD, "2001:db8::2")
    assert locked.value.status == 429 and int(locked.value.headers["Retry-After"]) > 0
    assert sessions.sign_in(api.services, "alice", PASSWORD, "198.51.100.4").user["name"] == "alice"


def test_a_success_does_not_count_against_the_address(api):
    for _ in range(sessions.ADDRESS_LIMIT + 1):
        assert sessions.sign_in(api.services, "alice", PASSWORD, "198.51.100.4").cookie


def test_failures_are_counted_behind_trusted_proxies_by_forwarded_address():
    settings = load_settings({"trusted_proxies": ["10.0.0.0/8"]})
    scope = {"type": "http", "client": ("10.0.0.1", 4000),
             "headers": [(b"x-forwarded-for", b"203.0.113.9, 198.51.100.7, 10.0.0.2")]}
    assert sessions.client_address(Request(scope), settings) == "198.51.100.7"
    scope["client"] = ("192.0.2.1", 4000)  # not a proxy: its header is not believed
    assert sessions.client_address(Request(scope), settings) == "192.0.2.1"


# -- passwords and the users commands ----------------------------------------------------------
def test_passwords_are_stored_as_salted_scrypt():
    first, second = sessions.hash_password(PASSWORD), sessions.hash_password(PASSWORD)
    assert first.startswith("scrypt$16384$8$1$") and len(first.split("$")) == 6
    assert PASSWORD not in first and first != second
    assert sessions.verify_password(PASSWORD, first) and not sessions.verify_password("nope", first)
    assert not sessions.verify_password(PASSWORD, None)
    assert not sessions.verify_password(PASSWORD, "scrypt$1$1$1$AA==$AA==")  # garbage never raises


def test_users_commands_set_passwords_and_show_them(tmp_path):
    r = cli_run(tmp_path, "users", "add", "ada", "--password-stdin", stdin="first password\n")
    assert r.exit_code == 0, r.output
    store = open_store(tmp_path / "sorakit.db")
    stored = store.user_by_name("ada")["password_hash"]
    assert stored.startswith("scrypt$") and "first password" not in stored
    assert sessions.verify_password("first password", stored)
    r = cli_run(tmp_path, "users", "passwd", "ada", "--password-stdin", stdin="second password\n")
    assert r.exit_code == 0, r.output
    stored = store.user_by_name("ada")["password_hash"]
    assert sessions.verify_password("second password", stored)
    assert not sessions.verify_password("first password", stored)
    for short in ("short\n", "\n", ""):
        r = cli_run(tmp_path, "users", "passwd", "ada", "--password-stdin", stdin=short)
        assert r.exit_code == 2 and "at least 8" in r.output, r.output
    assert store.user_by_name("ada")["password_hash"] == stored
    assert cli_run(tmp_path, "users", "add", "bob", "--password-stdin", stdin="tiny\n").exit_code == 2
    assert store.user_by_name("bob") is None  # a refused password adds nobody
    ghost = cli_run(tmp_path, "users", "passwd", "ghost", "--password-stdin", stdin="long enough\n")
    assert ghost.exit_code == 1 and "no user named 'ghost'" in ghost.output
    cli_run(tmp_path, "users", "add", "cy")
    cli_run(tmp_path, "users", "disable", "cy")
    rows = {line.split()[1]: line for line in cli_run(tmp_path, "users", "list").output.splitlines()
            if line.split()[1:2] in (["ada"], ["cy"])}
    assert "yes" in rows["ada"] and "no" in rows["cy"] and datetime.now().strftime("%Y-") in rows["cy"]


# -- the first start ---------------------------------------------------------------------------
def test_first_start_writes_a_private_password_that_signs_in(tmp_path):
    services = build_services(load_settings({"data_dir": tmp_path, "workers": 0}))
    serve_cli.ensure_local_user(services)
    path = tmp_path / "local.password"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    password = path.read_text().strip()
    assert len(password) >= 16 and serve_cli.local_password_file(services) == path
    client = TestClient(create_app(services.settings, services=services))
    assert signin(client, "local", password).status_code == 200
    serve_cli.ensure_local_user(services)
    assert path.read_text().strip() == password  # kept on later starts


def test_an_older_data_dir_gets_a_password_for_local(tmp_path):
    services = build_services(load_settings({"data_dir": tmp_path}))
    services.store.create_user("local")  # made before passwords existed
    assert serve_cli.ensure_local_user(services) is None
    assert services.store.user_by_name("local")["password_hash"]
    assert serve_cli.local_password_file(services) == tmp_path / "local.password"
    cli_run(tmp_path, "users", "passwd", "local", "--password-stdin", stdin="changed by hand\n")
    assert serve_cli.local_password_file(services) is None  # its file no longer tells the password


def test_serve_says_where_to_sign_in_on_every_start(tmp_path, monkeypatch):
    monkeypatch.setattr(serve_cli, "run_server", lambda s, services: None)
    for _ in range(2):
        r = cli_run(tmp_path, "serve", "--port", "8123")
        assert r.exit_code == 0, r.output
        assert (f"Open http://127.0.0.1:8123/ and sign in as 'local' with the password in "
                f"{tmp_path / 'local.password'}") in r.output


# -- the store ---------------------------------------------------------------------------------
def test_migrating_from_0005_adds_sessions_and_keeps_users(tmp_path):
    store = open_store(tmp_path / "old.db")
    user = store.create_user("ada")
    token = store.create_token(user["id"], 3600)
    engine = sqlite_engine(tmp_path / "old.db")
    with engine.begin() as conn:  # back to how 0005 left databases
        for table in ("sessions", "signin_failures"):
            conn.exec_driver_sql(f"DROP TABLE {table}")
        for column in ("password_hash", "disabled_at", "email"):
            conn.exec_driver_sql(f"ALTER TABLE users DROP COLUMN {column}")
        conn.exec_driver_sql("DELETE FROM schema_migrations WHERE name > '0005_webhooks'")
    assert migrate(engine) == [name for name, _ in MIGRATIONS if name > "0005_webhooks"]
    assert {"sessions", "signin_failures"} <= set(inspect(engine).get_table_names())
    kept = store.user_by_name("ada")
    assert kept["id"] == user["id"] and kept["password_hash"] is None and kept["disabled_at"] is None
    assert store.token(token["id"])["revoked_at"] is None
    assert migrate(engine) == []


# -- the models a create form offers -----------------------------------------------------------
def test_backend_models_lists_ids_and_their_engines(make_api):
    api = make_api(workers=0, models={"kite": "preview", "sy_ore": "preview"})
    assert_error(api.client.get("/backend/models"), 401, "invalid_token")
    models = api.client.get("/backend/models", headers=api.alice).json()["models"]
    assert [m["id"] for m in models] == ["sy_8", "sy_ore", "kite"]
    assert models[0] == {"id": "sy_8", "engine": "preview", "placeholder": True, "image_to_video": True}
