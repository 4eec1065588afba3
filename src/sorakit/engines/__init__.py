"""Engines turn a request into frames. ``build_engines`` makes the ones a server offers."""

from __future__ import annotations

from .base import Cancelled, Engine, EngineError, RenderContext, RenderJob

__all__ = ["Cancelled", "Engine", "EngineError", "RenderContext", "RenderJob", "build_engines"]


def build_engines(preview_pace: float = 0.0) -> dict[str, Engine]:
    from .preview import PreviewEngine

    return {"preview": PreviewEngine(pace_seconds=preview_pace)}
