"""The ``sorakit`` command. Thin: each group parses, calls the library, prints.

Errors from the library become a message and an exit code here; ``SORAKIT_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import os
import sys

import typer

from . import batch, generate, login, models, operations, serve, tasks, tokens, users, webhooks, worker

app = typer.Typer(help="sorakit: a self-hosted server for the Sora web video API.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
app.command("generate")(generate.generate)
app.command("remix")(operations.remix)
app.command("extend")(operations.extend)
app.command("storyboard")(operations.storyboard)
app.command("share")(operations.share)
app.command("unshare")(operations.unshare)
app.command("status")(tasks.status)
app.command("list")(tasks.list_drafts)
app.command("download")(tasks.download)
app.command("cancel")(tasks.cancel)
app.command("usage")(tasks.usage)
app.command("login")(login.login)
app.command("serve")(serve.serve)
app.command("worker")(worker.worker)
app.command("batch")(batch.batch)
app.add_typer(users.app, name="users")
app.add_typer(tokens.app, name="token")
app.add_typer(models.app, name="models")
app.add_typer(webhooks.app, name="webhooks")


def main() -> None:
    try:
        app()
    except Exception as exc:  # the last line of defence: no traceback for users
        if os.environ.get("SORAKIT_DEBUG") == "1":
            raise
        print(f"error: {type(exc).__name__}: {exc} (set SORAKIT_DEBUG=1 for details)", file=sys.stderr)
        sys.exit(1)
