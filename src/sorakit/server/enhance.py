"""Prompt enhancement (``POST /backend/editor/enhance_prompt``) by a chat model the operator runs.

sorakit holds no language model of its own: it asks an OpenAI-compatible ``/chat/completions``
endpoint (llama.cpp's server, vLLM, Ollama, a hosted API, ...) named by ``prompt_enhancer_url``,
and answers with what that model wrote. No rewrite is ever made up here: without an enhancer the
call is refused (400), and when the enhancer fails the caller is told so (502).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import httpx2

from .. import __version__
from ..config import Settings
from ..protocol.errors import ApiError

log = logging.getLogger("sorakit.server")

MAX_ANSWER_BYTES = 1024 * 1024  # a chat answer holding one prompt is a few KB; never read more
LENGTHS = {
    "short": "one or two sentences, at most 60 words",
    "medium": "one paragraph of about 80 to 120 words",
    "long": "two or three paragraphs, at most 250 words",
}
SYSTEM = (
    "You rewrite prompts for a text-to-video model. Given the user's idea, write one richer, "
    "concrete prompt for a single video: the subject and its action, the setting, visual detail "
    "(colours, textures, wardrobe), the camera (shot size, angle, movement, lens) and the lighting "
    "and mood. Keep everything the user asked for and add nothing that contradicts it. Write in the "
    "user's language. Length: {length}.{duration} Answer with the prompt text only: no title, no "
    "preamble, no quotes, no lists, no notes."
)
_THINKING = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)  # reasoning models' preamble
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u00ab": "\u00bb"}


def not_configured() -> ApiError:
    return ApiError(400, "prompt_enhancer_not_configured",
                    "Prompt enhancement is not set up on this server. Its operator can point "
                    "prompt_enhancer_url (environment: SORAKIT_PROMPT_ENHANCER_URL) at an "
                    "OpenAI-compatible chat endpoint such as http://127.0.0.1:8080/v1, with "
                    "prompt_enhancer_model and, if needed, prompt_enhancer_api_key.")


def failed(why: str) -> ApiError:
    return ApiError(502, "prompt_enhancer_failed", f"The prompt enhancer did not give an answer: {why} "
                    "Try again later, or write the prompt yourself.", type="server_error")


def system_prompt(expansion_level: str | None, duration_s: float | None) -> str:
    length = LENGTHS.get((expansion_level or "").strip().lower(), LENGTHS["medium"])
    duration = ""
    if duration_s:
        duration = (f" The video lasts {duration_s:g} seconds: describe only what can happen in that "
                    "time, as one continuous shot unless the user asks for cuts.")
    return SYSTEM.format(length=length, duration=duration)


def request_body(settings: Settings, prompt: str, expansion_level: str | None,
                 duration_s: float | None) -> dict[str, Any]:
    return {"model": settings.prompt_enhancer_model, "temperature": 0.7, "stream": False,
            "messages": [{"role": "system", "content": system_prompt(expansion_level, duration_s)},
                         {"role": "user", "content": prompt}]}


def enhance(settings: Settings, prompt: str, expansion_level: str | None = None,
            duration_s: float | None = None) -> str:
    """The enhancer's rewrite of ``prompt``; :class:`ApiError` 400 when none is configured, 502
    when it cannot be reached, times out, or answers something other than a chat completion."""
    if not settings.prompt_enhancer_url:
        raise not_configured()
    url = settings.prompt_enhancer_url.rstrip("/") + "/chat/completions"
    headers = {"user-agent": f"sorakit/{__version__}"}
    if settings.prompt_enhancer_api_key:
        headers["authorization"] = f"Bearer {settings.prompt_enhancer_api_key}"
    body = request_body(settings, prompt, expansion_level, duration_s)
    status, data = _post(url, headers, body, settings.prompt_enhancer_timeout_seconds)
    if not 200 <= status < 300:
        log.warning("prompt enhancer answered HTTP %s", status)
        raise failed(f"it answered HTTP {status}.")
    text = _content(data)
    if len(text) > settings.max_prompt_chars:
        raise failed(f"its answer was longer than this server's prompt limit ({settings.max_prompt_chars} "
                     "characters).")
    return text


def _post(url: str, headers: dict[str, str], body: dict, timeout: float) -> tuple[int, bytes]:
    try:
        with httpx2.Client(timeout=timeout, follow_redirects=False) as client:
            with client.stream("POST", url, json=body, headers=headers) as reply:
                data = bytearray()
                for chunk in reply.iter_bytes():
                    data += chunk
                    if len(data) > MAX_ANSWER_BYTES:
                        raise failed("its answer was too large.")
                return reply.status_code, bytes(data)
    except httpx2.TimeoutException:
        log.warning("prompt enhancer timed out after %s s", timeout)
        raise failed(f"it did not answer within {timeout:g} seconds.") from None
    except httpx2.HTTPError as exc:
        log.warning("prompt enhancer unreachable: %s: %s", type(exc).__name__, exc)
        raise failed(f"it could not be reached ({type(exc).__name__}).") from None


def _content(data: bytes) -> str:
    try:
        text = json.loads(data)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        log.warning("prompt enhancer answered something other than a chat completion")
        raise failed("its answer was not a chat completion.") from None
    if not isinstance(text, str):
        raise failed("its answer held no text.")
    text = _THINKING.sub("", text).strip()
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    if not text:
        raise failed("its answer was empty.")
    return text
