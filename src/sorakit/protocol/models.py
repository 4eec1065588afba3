"""Request bodies of the Sora web API (PROTOCOL section 2). Unknown keys are kept."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
    seed: int | None = Field(None, ge=0, lt=2**63)
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
    # sorakit extensions, used by the diffusers engines (the preview engine ignores them)
    negative_prompt: str | None = Field(None, max_length=10_000)
    num_inference_steps: int | None = Field(None, ge=1, le=1000)
    guidance_scale: float | None = Field(None, ge=0, le=100)

    @field_validator("n_frames", "seed", "nsamples", "num_inference_steps", mode="before")
    @classmethod
    def _not_bool(cls, value):
        if isinstance(value, bool):  # JSON true is not a frame count
            raise ValueError("must be an integer, not true/false")
        return value

    @field_validator("prompt", "title", "style_id", "model", "orientation", "size", "kind", "negative_prompt")
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        # JSON may carry lone surrogates ("\ud800"), which no database or file can store.
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("must be valid Unicode text (no lone surrogates)") from None
        return value
