"""Request bodies of the Sora web API (PROTOCOL section 2). Unknown keys are kept."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class CreateRequest(BaseModel):
    """``POST /backend/nf/create``. Every key the web page sent; all but ``prompt`` optional."""

    model_config = ConfigDict(extra="allow")

    kind: str | None = "video"
    prompt: str
    title: str | None = None
    orientation: str | None = None
    size: str | None = None
    n_frames: int | None = None
    model: str | None = None
    inpaint_items: list[dict[str, Any]] | None = None
    remix_target_id: str | None = None
    style_id: str | None = None
    seed: int | None = None
    cameo_ids: list[Any] | None = None
    cameo_replacements: Any = None
    storyboard_id: str | None = None
    project_id: str | None = None
    metadata: Any = None
    audio_caption: str | None = None
    audio_transcript: str | None = None
    video_caption: str | None = None
    use_image_as_first_frame: bool | None = None
    nsamples: int | None = None
