"""``sorakit models``: which models the server is configured with, what they can do, the catalogue of
presets, and fetching their weights."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..config import ConfigError, load_settings
from ..engines.catalogue import PRESETS, append_section, remove_section, toml_section
from ..engines.diffusers_engine import DiffusersEngine
from ..engines.models import model_specs
from .common import DataDir, fail, settings

app = typer.Typer(help="Configured models, the catalogue of presets, and their weights.", no_args_is_help=True)

#: how ``Engine.operations()`` is shown
CAPABILITIES = {"generate": "T2V", "image": "I2V", "remix": "remix", "extend": "extend", "audio": "audio"}
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def _engines(data_dir) -> tuple[object, list[DiffusersEngine]]:
    s = settings(data_dir=data_dir)
    try:
        specs = model_specs(s.models)
    except ConfigError as exc:
        fail(f"configuration error: {exc}", code=2)
    return s, [DiffusersEngine(spec, s.weights_dir) for spec in specs]


def capabilities(engine) -> str:
    ops = engine.operations()
    return ", ".join(label for op, label in CAPABILITIES.items() if op in ops)


def weights_state(engine: DiffusersEngine) -> str:
    """Whether the model's files are on this machine (and its separate image-to-video files)."""
    pull = f"sorakit models pull {engine.name}"
    if not engine.files():
        return f"missing: {pull}"
    if engine.spec.image_path and not engine.files(image=True):
        return f"present; I2V weights missing: {pull}"
    return "present"


@app.command("list")
def list_models(data_dir: DataDir = None) -> None:
    """Show configured models: family, what each can do, speed switches, whether its weights are here."""
    from ..engines import speed
    from ..engines.preview import PreviewEngine

    s, engines = _engines(data_dir)
    table = Table("model", "family", "can do", "speed switches", "weights", "device")
    table.add_row("preview", "procedural", capabilities(PreviewEngine()), "-", "none needed", "cpu")
    for e in engines:
        table.add_row(e.name, e.family.name, capabilities(e), speed.summary(e.spec), weights_state(e), e.spec.device)
    Console().print(table)
    for e in engines:
        reason = e.unavailable()
        if reason and e.files():  # present, but something else stops it (the diffusers extra)
            typer.echo(f"{e.name}: {reason}")
    aliases = {k: v for k, v in s.models.items() if isinstance(v, str)}
    typer.echo(f"sy_8 / sy_ore -> {s.default_engine}" + "".join(f"; {k} -> {v}" for k, v in aliases.items()))


@app.command("presets")
def presets() -> None:
    """List the catalogue: presets ``sorakit models add NAME --preset P`` writes as a config section."""
    # one block per preset, not a table: hub ids are long, and a narrow terminal must never cut a
    # preset's name (it is what `models add --preset` takes)
    for p in PRESETS.values():
        t = p.table
        sizes = " / ".join("x".join(map(str, t["resolution"][k])) for k in ("small", "large") if k in t["resolution"])
        frames = f"at most {t['max_frames']} frames" if t.get("max_frames") else "the family's frame rule"
        guidance = f"guidance {t['guidance']}" if t.get("guidance") is not None else "the model's guidance"
        typer.echo(f"{p.name}  ({p.family})")
        typer.echo(f"    weights: {t['path']}" + (f"  image-to-video: {t['image_path']}" if t.get("image_path") else ""))
        typer.echo(f"    {t.get('dtype', 'bfloat16')}, {t.get('steps', '?')} steps, {guidance}, {t.get('fps', '?')} fps, "
                   f"{sizes} (small / large), {frames}")
    typer.echo("Facts from the model cards; sources: `sorakit models add NAME --preset P` writes them into the "
               "section's comments.")


@app.command("add")
def add(name: str,
        preset: Annotated[str, typer.Option("--preset", help="a preset of `sorakit models presets`")],
        path: Annotated[str | None, typer.Option("--path", help="weights: a local directory instead of the "
                                                 "preset's hub id")] = None,
        device: Annotated[str | None, typer.Option("--device", help="cuda (default), cuda:1, cpu ...")] = None,
        force: Annotated[bool, typer.Option("--force", help="replace a model of that name")] = False,
        data_dir: DataDir = None) -> None:
    """Add a model to <data-dir>/config.toml from a catalogue preset (the rest of the file is kept)."""
    if preset not in PRESETS:
        fail(f"no preset {preset!r}; the presets are {', '.join(PRESETS)} (see `sorakit models presets`)", code=2)
    if not _NAME.match(name) or name == "preview":
        fail(f"{name!r} cannot name a model: use letters, digits, '-' and '_' (and not 'preview')", code=2)
    s = settings(data_dir=data_dir)
    config = s.data_dir / "config.toml"
    original = config.read_text(encoding="utf-8") if config.is_file() else ""
    try:
        existing = tomllib.loads(original).get("models", {})
    except tomllib.TOMLDecodeError as exc:
        fail(f"{config}: {exc}", code=2)
    text = original
    if name in existing:
        if not force:
            fail(f"a model named {name!r} is already in {config}; pass --force to replace it", code=1)
        text = remove_section(original, name)
        if text is None:
            fail(f"{name!r} is defined in {config} other than as a [models.{name}] section; edit it by hand", code=1)
    overrides = {k: v for k, v in {"path": path, "device": device}.items() if v is not None}
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(append_section(text, toml_section(name, PRESETS[preset], overrides)), encoding="utf-8")
    try:  # read back as the server will: a bad override must not leave a broken config behind
        model_specs(load_settings({"data_dir": s.data_dir}).models)
    except ConfigError as exc:
        config.write_text(original, encoding="utf-8")
        fail(f"configuration error, {config} left as it was: {exc}", code=2)
    typer.echo(f"added [models.{name}] ({PRESETS[preset].title}) to {config}")
    engine = next(e for e in _engines(s.data_dir)[1] if e.name == name)
    typer.echo(f"{name}: {capabilities(engine)}; weights {weights_state(engine)}")


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
    upsampler = engine.spec.upsampler_path
    if upsampler and upsampler != engine.spec.path and "/" in upsampler and not Path(upsampler).expanduser().exists():
        targets.append((upsampler, name + "-upsampler"))  # a hub id of its own (two-stage LTX-2)
    for repo, folder in targets:
        dest = s.weights_dir / folder
        typer.echo(f"pulling {repo} into {dest} ...")
        try:
            snapshot_download(repo, local_dir=dest)
        except Exception as exc:  # offline, unknown repo, gated: say which and how
            fail(f"could not download {repo}: {type(exc).__name__}: {exc}")
    typer.echo(f"{name}: weights present")
