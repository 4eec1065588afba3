"""The admin commands: users, tokens, and serve's first start. Asserts on the store and files."""

from __future__ import annotations

import stat

import pytest
from typer.testing import CliRunner

from sorakit.cli.main import app
from sorakit.cli.serve import ensure_local_user
from sorakit.config import load_settings
from sorakit.server import auth
from sorakit.server.services import build_services
from sorakit.store import open_store


@pytest.fixture
def run(tmp_path):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, [*args, "--data-dir", str(tmp_path)])

    return invoke


def _authenticate(tmp_path, token):
    services = build_services(load_settings({"data_dir": tmp_path}))
    return auth.authenticate(services.store, services.jwt_key, f"Bearer {token}")


def test_users_add_and_list(run, tmp_path):
    r = run("users", "add", "ada", "--concurrency", "2", "--daily-limit", "7")
    assert r.exit_code == 0, r.output
    user = open_store(tmp_path / "sorakit.db").user_by_name("ada")
    assert (user["concurrency_limit"], user["daily_limit"]) == (2, 7)
    listing = run("users", "list")
    assert "ada" in listing.output and user["id"] in listing.output
    again = run("users", "add", "ada")
    assert again.exit_code == 1 and "already exists" in again.output


def test_token_create_prints_a_working_token_last(run, tmp_path):
    run("users", "add", "ada")
    r = run("token", "create", "ada", "--ttl", "2h")
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    assert _authenticate(tmp_path, token)["name"] == "ada"
    assert 7190 <= auth.expiry(token) - open_store(tmp_path / "sorakit.db").clock() <= 7201


def test_an_api_key_for_an_app_never_expires_and_can_be_revoked(run, tmp_path):
    run("users", "add", "app")
    r = run("token", "create", "app", "--ttl", "never")
    assert r.exit_code == 0, r.output
    assert "no expiry" in r.stderr and "shown once" in r.stderr
    key = r.stdout.strip().splitlines()[-1]
    assert _authenticate(tmp_path, key)["name"] == "app"
    assert auth.expiry(key) - open_store(tmp_path / "sorakit.db").clock() > 99 * 365 * 86400
    assert run("token", "revoke", key).exit_code == 0
    with pytest.raises(Exception, match="invalidated"):
        _authenticate(tmp_path, key)


def test_token_revoke_by_id_or_by_token(run, tmp_path):
    run("users", "add", "ada")
    for use_token in (False, True):
        token = run("token", "create", "ada").stdout.strip().splitlines()[-1]
        jti = auth.jwt.decode(token, options={"verify_signature": False})["jti"]
        r = run("token", "revoke", token if use_token else jti)
        assert r.exit_code == 0, r.output
        with pytest.raises(Exception) as caught:
            _authenticate(tmp_path, token)
        assert caught.value.code == "token_invalidated"
    assert run("token", "revoke", "tok_nope").exit_code == 1


def test_token_errors_are_messages_not_tracebacks(run):
    r = run("token", "create", "ghost")
    assert r.exit_code == 1 and "no user named 'ghost'" in r.output and "Traceback" not in r.output
    run("users", "add", "ada")
    bad = run("token", "create", "ada", "--ttl", "forever")
    assert bad.exit_code == 2 and "forever" in bad.output


def test_bad_config_exits_2_with_the_setting_named(run, tmp_path):
    (tmp_path / "config.toml").write_text("workers = 'many'")
    r = run("users", "list")
    assert r.exit_code == 2 and "workers" in r.output


def test_first_start_creates_local_user_and_private_token(tmp_path):
    services = build_services(load_settings({"data_dir": tmp_path}))
    path = ensure_local_user(services)
    assert path == tmp_path / "local.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    assert auth.authenticate(services.store, services.jwt_key, f"Bearer {token}")["name"] == "local"
    assert ensure_local_user(services) is None  # only on a first start
