"""The moderation hook: a configurable list of blocked terms, matched as whole words, any case."""

from __future__ import annotations

import re
from collections.abc import Iterable


class BlockList:
    def __init__(self, terms: Iterable[str]) -> None:
        self.terms = [t.strip() for t in terms if t.strip()]
        alternatives = "|".join(re.escape(t) for t in self.terms)
        self._pattern = re.compile(rf"(?<!\w)({alternatives})(?!\w)", re.IGNORECASE) if self.terms else None

    def first_match(self, text: str) -> str | None:
        if self._pattern is None:
            return None
        found = self._pattern.search(text)
        return found.group(1) if found else None


def violation_reasons(term: str) -> tuple[str, str]:
    """The ``reason_str`` and ``markdown_reason_str`` of a refused prompt."""
    plain = (f'This prompt was not generated because it contains "{term}", a term this server '
             "does not allow. Edit the prompt and try again.")
    markdown = (f"**This prompt was not generated.** It contains *{term}*, a term this server does "
                "not allow. Edit the prompt and try again.")
    return plain, markdown
