"""``sorakit token``: issue and revoke bearer tokens."""

from __future__ import annotations

from typing import Annotated

import jwt
import typer

from ..server import auth
from ..server.secrets import derive, shared_master_secret
from ..store import store_for
from .common import NEVER_SECONDS, DataDir, fail, parse_ttl, settings

app = typer.Typer(help="Manage bearer tokens.", no_args_is_help=True)


@app.command("create")
def create(name: str,
           ttl: Annotated[str, typer.Option(
               help="Lifetime: 30d, 12h, 90m, seconds, or never (a key for an app).")] = "30d",
           data_dir: DataDir = None) -> None:
    """Issue a token for user NAME. The token alone is printed on the last line."""
    s = settings(data_dir=data_dir)
    seconds = parse_ttl(ttl)
    store = store_for(s)
    user = store.user_by_name(name)
    if user is None:
        fail(f"no user named {name!r} (add one with `sorakit users add {name}`)")
    token, row = auth.issue(store, derive(shared_master_secret(s, store), "jwt"), user["id"], seconds)
    lifetime = "with no expiry" if seconds >= NEVER_SECONDS else f"valid for {ttl}"
    typer.echo(f"token {row['id']} for {name}, {lifetime} (shown once; revoke with "
               f"`sorakit token revoke {row['id']}`):", err=True)
    typer.echo(token)


def _token_id(text: str) -> str:
    """A token id as given, or the ``jti`` of a whole token pasted instead."""
    if text.startswith("tok_"):
        return text
    try:
        return str(jwt.decode(text, options={"verify_signature": False})["jti"])
    except (jwt.InvalidTokenError, KeyError):
        return text


@app.command("revoke")
def revoke(token_id: Annotated[str, typer.Argument(help="The token's id (tok_...) or the token itself.")],
           data_dir: DataDir = None) -> None:
    """Revoke a token at once; requests with it get 401 token_invalidated."""
    s = settings(data_dir=data_dir)
    token_id = _token_id(token_id)
    if not store_for(s).revoke_token(token_id):
        fail(f"no active token {token_id!r}")
    typer.echo(f"revoked {token_id}")
