"""The ``sorakit`` command. Thin: each group parses, calls the library, prints.

Errors from the library become a message and an exit code here; ``SORAKIT_DEBUG=1`` shows the
traceback instead.

Commands load lazily: ``COMMANDS`` names each one's module, and a module is imported only when
its command runs (or shows its own help). ``sorakit --help`` imports none of them, and a command
imports only what it uses (``status`` never imports the server, SQLAlchemy or numpy). The help
line of each command in ``sorakit --help`` is written here; a test checks it against the
command's own help.
"""

from __future__ import annotations

import importlib
import os
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import click  # (recent typer carries its own copy of click: at run time only typer's classes are used)
    import typer


class Entry(NamedTuple):
    name: str
    target: str  # "module:attribute" in sorakit.cli: a command function, or a typer.Typer group
    help: str  # the command's help line in ``sorakit --help``


COMMANDS = (
    Entry("generate", "generate:generate", "Generate a video from PROMPT and download it."),
    Entry("remix", "operations:remix", "Remix a video with a new PROMPT, follow it and download the result."),
    Entry("extend", "operations:extend",
          "Continue a video by --seconds; downloads the source and its continuation as one video."),
    Entry("storyboard", "operations:storyboard", "Make one video from the shots in FILE, in order, and download it."),
    Entry("share", "operations:share",
          "Post a draft under a public permalink (anyone with the link can watch it) and print the link."),
    Entry("unshare", "operations:unshare", "Take a post down: its permalink stops working (the draft stays)."),
    Entry("status", "tasks:status", "Show tasks: the pending list, or the given ones."),
    Entry("list", "tasks:list_drafts", "List drafts (finished generations), newest first."),
    Entry("download", "tasks:download", "Download the video of a task or draft (resuming a partial download)."),
    Entry("cancel", "tasks:cancel", "Cancel a task (sorakit's own extension of the API)."),
    Entry("usage", "tasks:usage", "Show the quota: videos left today and when the next one frees up."),
    Entry("login", "login:login", "Save the server and token (and browser headers) that client commands use."),
    Entry("serve", "serve:serve", "Run the Sora-compatible API server."),
    Entry("worker", "worker:worker", "Run workers: claim queued tasks, render and encode them, record the results."),
    Entry("workers", "fleet:workers", "List the workers: alive, busy or idle, what each serves and runs, when last seen."),
    Entry("batch", "batch:batch",
          "Make a video for every row of FILE; run it again to resume after a crash or Ctrl-C."),
    Entry("users", "users:app", "Manage users."),
    Entry("token", "tokens:app", "Manage bearer tokens."),
    Entry("models", "models:app", "Configured models, the catalogue of presets, and their weights."),
    Entry("webhooks", "webhooks:app", "Manage webhook endpoints."),
)
_BY_NAME = {e.name: e for e in COMMANDS}


def load_command(entry: Entry) -> click.Command:
    """The click command of an entry, built by Typer exactly as ``app.command``/``add_typer`` would."""
    import typer

    module, attribute = entry.target.split(":")
    target = getattr(importlib.import_module(f"{__package__}.{module}"), attribute)
    if isinstance(target, typer.Typer):
        group = typer.main.get_group(target)
        group.name = entry.name
        return group
    single = typer.Typer()
    single.command(entry.name)(target)
    return typer.main.get_group(single).commands[entry.name]


def _build_app() -> typer.Typer:
    """The typer application (typer is imported here: the top-level help never needs it)."""
    import typer
    from typer.core import TyperCommand, TyperGroup

    class LazyGroup(TyperGroup):
        """The top-level group: a command's module is imported when that command is looked up.

        While the group lists its commands (its own help: ``sorakit --help`` or no arguments; shell
        completion of a command name), a lookup answers with a stand-in that carries only the name
        and help line, so listing imports nothing.
        """

        _listing = False

        @contextmanager
        def _stand_ins(self):
            self._listing = True
            try:
                yield
            finally:
                self._listing = False

        def list_commands(self, ctx: click.Context) -> list[str]:
            # (a command registered with app.command() the usual way is listed too, after these)
            return [*_BY_NAME, *(name for name in self.commands if name not in _BY_NAME)]

        def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
            entry = _BY_NAME.get(cmd_name)
            if entry is not None and cmd_name not in self.commands:
                if self._listing:
                    return TyperCommand(entry.name, help=entry.help)
                self.commands[cmd_name] = load_command(entry)
            return self.commands.get(cmd_name)

        def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            with self._stand_ins():
                return super().format_help(ctx, formatter)

        def shell_complete(self, ctx: click.Context, incomplete: str) -> list:
            with self._stand_ins():
                return super().shell_complete(ctx, incomplete)


    app = typer.Typer(cls=LazyGroup, help="sorakit: a self-hosted server for the Sora web video API.",
                      no_args_is_help=True, pretty_exceptions_enable=False)


    @app.callback()
    def _root() -> None:
        pass  # a group with no eager commands needs a callback to be a group

    return app


_APP: typer.Typer | None = None


def __getattr__(name: str):
    """``app``: the typer application, built on first use."""
    global _APP
    if name == "app":
        if _APP is None:
            _APP = _build_app()
        return _APP
    raise AttributeError(name)


DESCRIPTION = "sorakit: a self-hosted server for the Sora web video API."
_ROOT_OPTIONS = (("--install-completion", "Install completion for the current shell."),
                 ("--show-completion", "Show completion for the current shell, to copy it or customize the "
                                       "installation."),
                 ("--help", "Show this message and exit."))


def quick_help(width: int | None = None) -> str:
    """``sorakit --help``: the commands and their help lines, as plain text, without typer or rich
    (most of the CLI's start-up time): printing a list needs neither."""
    import textwrap

    if width is None:
        try:
            width = os.get_terminal_size().columns
        except OSError:
            width = 80
    width = max(min(width, 100), 40)

    def table(rows) -> list[str]:
        pad = max(len(name) for name, _ in rows) + 4
        out = []
        for name, text in rows:
            lines = textwrap.wrap(text, width - pad) or [""]
            out.append(f"  {name.ljust(pad - 2)}{lines[0]}")
            out += [" " * pad + line for line in lines[1:]]
        return out

    lines = ["Usage: sorakit [OPTIONS] COMMAND [ARGS]...", "", DESCRIPTION, "", "Options:",
             *table(_ROOT_OPTIONS), "", "Commands:", *table([(e.name, e.help) for e in COMMANDS]), "",
             "Run 'sorakit COMMAND --help' for a command's own options."]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = sys.argv[1:]
    if args in ([], ["--help"], ["-h"]):
        sys.stdout.write(quick_help())
        sys.exit(0 if args else 2)  # no arguments is a usage error, as typer's no_args_is_help says
    try:
        __getattr__("app")()
    except Exception as exc:  # the last line of defence: no traceback for users
        if os.environ.get("SORAKIT_DEBUG") == "1":
            raise
        print(f"error: {type(exc).__name__}: {exc} (set SORAKIT_DEBUG=1 for details)", file=sys.stderr)
        sys.exit(1)
