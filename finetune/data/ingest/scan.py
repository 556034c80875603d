"""Where the scrubber would cut, shown to a person without showing the secret: `finetune data scan` and the benchmark.

A report that printed the secrets it found would itself be a leak (terminal scrollback, CI logs), so every value is
masked: its first two characters (enough to tell `gh`, `sk`, `AK` apart; too few to use) and its length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from finetune.data.ingest.secret_shapes import Finding
from finetune.data.ingest.secrets import find_secrets, merge_findings

PREVIEW_CHARS = 140  # a flagged line is shown up to this many characters
_SHOWN_PREFIX = 2
_MIN_CHARS_FOR_PREFIX = 12  # a shorter secret shows no character at all


@dataclass(frozen=True)
class Flag:
    """One span the scrubber would replace: where (`line` counts from 1), by which rule, and the masked line."""

    where: str
    line: int
    kind: str
    preview: str

    def text(self) -> str:
        return f"{self.where}:{self.line}: {self.kind}  {self.preview}"


def mask(value: str) -> str:
    """`gh…(40)`: never the value itself."""
    shown = value[:_SHOWN_PREFIX] if len(value) >= _MIN_CHARS_FOR_PREFIX else ""
    return f"«{shown}…({len(value)})»"


def scan_text(text: str, path: str, where: str | None = None) -> list[Flag]:
    """The merged findings of `text` as flags, one per span, located at the line the span starts on."""
    findings = merge_findings(find_secrets(text, path))
    return list(_flags(text, findings, where if where is not None else path))


def _flags(text: str, findings: list[Finding], where: str) -> Iterator[Flag]:
    for found in findings:
        line_start = text.rfind("\n", 0, found.start) + 1
        line_end = text.find("\n", found.start)
        line_end = len(text) if line_end < 0 else line_end
        on_line = [f for f in findings if f.start < line_end and f.end > line_start]
        yield Flag(where, text.count("\n", 0, found.start) + 1, found.kind, _masked_line(text, line_start, line_end, on_line))


def _masked_line(text: str, start: int, end: int, findings: list[Finding]) -> str:
    """The line with every secret on it masked (a span that runs past the line is masked to its end)."""
    pieces, position = [], start
    for found in findings:
        pieces += [text[position : max(position, found.start)], mask(text[found.start : found.end])]
        position = max(position, found.end)
    pieces.append(text[position:end] if position < end else "")
    line = "".join(pieces).strip()
    return line if len(line) <= PREVIEW_CHARS else line[: PREVIEW_CHARS - 1] + "…"
