"""Engines turn a request into frames. ``build_engines`` makes the ones a server offers."""

from __future__ import annotations

from ..config import ConfigError, Settings
from .base import (OPERATIONS, AudioTrack, Cancelled, Engine, EngineError, Plan, PlanRefused, RenderContext,
                   RenderJob)

__all__ = ["OPERATIONS", "AudioTrack", "Cancelled", "Engine", "EngineError", "Plan", "PlanRefused", "RenderContext", "RenderJob", "build_engines"]


def build_engines(settings: Settings) -> dict[str, Engine]:
    """The preview engine plus one diffusers engine per ``[models.NAME]`` table.

    Nothing heavy happens here: torch and diffusers are imported when a model first runs, so a
    server without the ``diffusers`` extra starts and serves the preview engine.
    """
    from .diffusers_engine import DiffusersEngine
    from .models import model_specs
    from .preview import PreviewEngine

    engines: dict[str, Engine] = {"preview": PreviewEngine(pace_seconds=settings.preview_pace)}
    for spec in model_specs(settings.models):
        engines[spec.name] = DiffusersEngine(spec, settings.weights_dir)
    _check_names(settings, engines)
    return engines


def _check_names(settings: Settings, engines: dict[str, Engine]) -> None:
    if settings.default_engine not in engines:
        raise ConfigError(f"default_engine {settings.default_engine!r} is neither 'preview' nor a "
                          f"[models] table")
    for alias, target in settings.models.items():
        if isinstance(target, str) and target not in engines:
            raise ConfigError(f"models.{alias} = {target!r} names no engine or model")
