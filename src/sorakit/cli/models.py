"""``sorakit models``: which models the server is configured with, and fetching their weights."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..config import ConfigError
from ..engines.diffusers_engine import DiffusersEngine
from ..engines.models import model_specs
from .common import DataDir, fail, settings

app = typer.Typer(help="Configured models and their weights.", no_args_is_help=True)


def _engines(data_dir) -> tuple[object, list[DiffusersEngine]]:
    s = settings(data_dir=data_dir)
    try:
        specs = model_specs(s.models)
    except ConfigError as exc:
        fail(f"configuration error: {exc}", code=2)
    return s, [DiffusersEngine(spec, s.weights_dir) for spec in specs]


@app.command("list")
def list_models(data_dir: DataDir = None) -> None:
    """Show configured models, their family, and whether their files are on this machine."""
    s, engines = _engines(data_dir)
    table = Table("model", "family", "weights", "present", "image-to-video", "device")
    table.add_row("preview", "procedural", "-", "yes", "yes (first frame)", "cpu")
    for e in engines:
        present = "yes" if e.files() else "no: sorakit models pull " + e.name
        i2v = "no" if not e.supports_image else ("yes" if e.spec.image_path is None or e.files(True) else "weights missing")
        table.add_row(e.name, e.family.name, e.spec.path, present, i2v, e.spec.device)
    Console().print(table)
    aliases = {k: v for k, v in s.models.items() if isinstance(v, str)}
    typer.echo(f"sy_8 / sy_ore -> {s.default_engine}" + "".join(f"; {k} -> {v}" for k, v in aliases.items()))


@app.command("pull")
def pull(name: str, data_dir: DataDir = None) -> None:
    """Download a configured model's weights (and its image-to-video weights) from the hub."""
    s, engines = _engines(data_dir)
    engine = next((e for e in engines if e.name == name), None)
    if engine is None:
        fail(f"no model named {name!r} in the configuration (see `sorakit models list`)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        fail("pulling needs huggingface_hub, part of the diffusers extra: pip install 'sorakit[diffusers]'")
    targets = [(engine.spec.path, name)]
    if engine.spec.image_path:
        targets.append((engine.spec.image_path, name + "-i2v"))
    for repo, folder in targets:
        dest = s.weights_dir / folder
        typer.echo(f"pulling {repo} into {dest} ...")
        try:
            snapshot_download(repo, local_dir=dest)
        except Exception as exc:  # offline, unknown repo, gated: say which and how
            fail(f"could not download {repo}: {type(exc).__name__}: {exc}")
    typer.echo(f"{name}: weights present")
