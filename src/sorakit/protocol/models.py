"""Request bodies of the Sora web API (PROTOCOL section 2). Unknown keys are kept."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


# Length bounds of known fields (unknown ones: protocol/bounds.py). Documented in the README.
NAME = 200  # ids, enum-like words, model names
TITLE = 1_000
TEXT = 10_000  # prompts, captions, transcripts
ITEMS = 10  # inpaint_items, cameo_ids


class CreateRequest(BaseModel):
    """``POST /backend/nf/create``. Every key the web page sent; all but ``prompt`` optional."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["video"] | None = "video"
    prompt: str = Field(min_length=1, max_length=TEXT)  # the server's own limit (max_prompt_chars) is checked later
    title: str | None = Field(None, max_length=TITLE)
    orientation: str | None = Field(None, max_length=NAME)
    size: str | None = Field(None, max_length=NAME)
    n_frames: int | None = Field(None, ge=1)  # the upper bound is the server's max_frames
    model: str | None = Field(None, max_length=NAME)
    inpaint_items: list[dict[str, Any]] | None = Field(None, max_length=ITEMS)
    remix_target_id: str | None = Field(None, max_length=NAME)
    style_id: str | None = Field(None, max_length=NAME)
    seed: int | None = Field(None, ge=0, lt=2**63)
    cameo_ids: list[Any] | None = Field(None, max_length=ITEMS)
    cameo_replacements: Any = None
    storyboard_id: str | None = Field(None, max_length=NAME)
    project_id: str | None = Field(None, max_length=NAME)
    metadata: Any = None
    audio_caption: str | None = Field(None, max_length=TEXT)
    audio_transcript: str | None = Field(None, max_length=TEXT)
    video_caption: str | None = Field(None, max_length=TEXT)
    use_image_as_first_frame: bool | None = None
    nsamples: int | None = None
    # sorakit extensions, used by the diffusers engines (the preview engine ignores them)
    negative_prompt: str | None = Field(None, max_length=TEXT)
    num_inference_steps: int | None = Field(None, ge=1, le=1000)
    guidance_scale: float | None = Field(None, ge=0, le=100)
    #: sorakit extension: how far a remix may move from its source (0 keeps it, 1 ignores it)
    remix_strength: float | None = Field(None, ge=0, le=1)
    #: sorakit extension: false makes a silent video even on an engine with sound
    audio: bool | None = None

    @field_validator("n_frames", "seed", "nsamples", "num_inference_steps", mode="before")
    @classmethod
    def _not_bool(cls, value):
        if isinstance(value, bool):  # JSON true is not a frame count
            raise ValueError("must be an integer, not true/false")
        return value


class StoryboardRequest(CreateRequest):
    """``POST /backend/nf/create/storyboard``: the create body whose ``prompt`` holds the web
    app's timeline text, or (sorakit) a structured ``shots`` list, when ``prompt`` may be left out."""

    prompt: str | None = Field(None, max_length=TEXT)  # type: ignore[assignment]
    shots: list[dict[str, Any]] | None = Field(None, max_length=100)
    instructions: str | None = Field(None, max_length=TEXT)
    #: start each shot from the previous shot's last frame (engines with image-to-video)
    continuity: bool | None = None


class ExtensionRequest(BaseModel):
    """``POST /backend/project_y/profile/drafts/{gen_id}/long_video_extension``."""

    model_config = ConfigDict(extra="allow")

    user_prompt: str | None = Field(None, max_length=TEXT)
    extension_duration_s: float = Field(10.0, gt=0)
    enable_rewrite: bool | None = None
    model: str | None = Field(None, max_length=NAME)
    audio: bool | None = None

    @field_validator("extension_duration_s", mode="before")
    @classmethod
    def _not_bool(cls, value):
        if isinstance(value, bool):
            raise ValueError("must be a number of seconds, not true/false")
        return value
