"""The one scrubbing stage every piece of text passes before anything copies it.

Repository files, JSONL/text/dataset documents, every turn of every instruction record and every file path a model
is shown (`<file_sep>` headers, aiXcoder's path comment, the `path` field of `data fim`) go through a `Scrubber`
right where they are read, before deduplication keys, retrieved context, neighbour files or caches can copy them.
It counts what it replaced by detector kind and by source type, for the ingestion report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from finetune.data.ingest.secret_rules import encoded_findings
from finetune.data.ingest.secret_shapes import known_format_findings
from finetune.data.ingest.secrets import SECRET_PLACEHOLDER, find_secrets, merge_findings, replace_spans
from finetune.data.types import Conversation, Document

# Source types, as the report names them.
SOURCE_TYPES = ("repo", "jsonl", "text", "dataset", "instruction", "path")


@dataclass
class ScrubReport:
    """Replaced spans by detector kind and by source type, and how many items (files, records, paths) changed."""

    by_kind: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    items: Counter[str] = field(default_factory=Counter)

    @property
    def spans(self) -> int:
        return sum(self.by_source.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "spans": self.spans,
            "by_kind": dict(self.by_kind.most_common()),
            "by_source": dict(self.by_source.most_common()),
            "items_changed": dict(self.items.most_common()),
        }

    def lines(self) -> list[str]:
        if not self.spans:
            return ["secrets scrubbed: none found"]
        sources = ", ".join(f"{k} {v}" for k, v in self.by_source.most_common())
        kinds = ", ".join(f"{k} {v}" for k, v in self.by_kind.most_common())
        return [f"secrets scrubbed: {self.spans} ({sources}); kinds: {kinds}"]


class Scrubber:
    """Replaces secrets in texts and paths, remembering (per run) which placeholder each secret in a path got."""

    def __init__(self) -> None:
        self.report = ScrubReport()
        self._path_numbers: dict[str, int] = {}  # a secret found in a path -> its placeholder number
        self._paths: dict[str, str] = {}  # scrubbed path -> the original path it stands for

    def text(self, text: str, path: str, source: str) -> str:
        """`text` with every secret replaced by SECRET_PLACEHOLDER (`path` picks the rules for its file type)."""
        if not text:
            return text
        findings = merge_findings(find_secrets(text, path))
        if not findings:
            return text
        self.report.by_kind.update(found.kind for found in findings)
        self.report.by_source[source] += len(findings)
        self.report.items[source] += 1
        return replace_spans(text, [(f.start, f.end) for f in findings], SECRET_PLACEHOLDER)

    def path(self, path: str) -> str:
        """`path` with each secret in a component replaced by `<SECRET-n>`: the same secret keeps its number, and
        two different paths never become one (a collision takes a fresh number)."""
        parts = path.split("/")
        pieces = [_path_secrets(part) for part in parts]
        if not any(pieces) and "<SECRET-" not in path:
            return path
        scrubbed = "/".join(self._scrub_part(part, found) for part, found in zip(parts, pieces, strict=True))
        while self._paths.setdefault(scrubbed, path) != path:  # a file literally named `<SECRET-1>.py` exists
            scrubbed += "~"
        kinds = [kind for found in pieces for _, _, kind in found]
        self.report.by_kind.update(kinds)
        self.report.by_source["path"] += len(kinds)
        self.report.items["path"] += 1
        return scrubbed

    def _scrub_part(self, part: str, found: tuple[tuple[int, int, str], ...]) -> str:
        pieces, position = [], 0
        for start, end, _ in found:
            number = self._path_numbers.setdefault(part[start:end], len(self._path_numbers) + 1)
            pieces += [part[position:start], f"<SECRET-{number}>"]
            position = end
        return "".join(pieces) + part[position:]

    def document(self, doc: Document, source: str) -> Document:
        """The document with its text and its path scrubbed."""
        text, path = self.text(doc.text, doc.path, source), self.path(doc.path)
        return doc if (text, path) == (doc.text, doc.path) else replace(doc, text=text, path=path)

    def documents(self, docs: list[Document], source: str) -> list[Document]:
        return [self.document(doc, source) for doc in docs]

    def conversation(self, conversation: Conversation) -> Conversation:
        """Every turn's text scrubbed (instruction, input, output, response, each message), and the locator."""
        turns = tuple((role, self.text(text, "", "instruction")) for role, text in conversation.turns)
        name, sep, where = conversation.source.rpartition(":")
        source = f"{self.path(name)}{sep}{where}" if sep else self.path(where)
        return replace(conversation, turns=turns, source=source)


@lru_cache(maxsize=65536)
def _path_secrets(part: str) -> tuple[tuple[int, int, str], ...]:
    """(start, end, kind) of the secrets in one path component: known formats, plain or hex/base64 encoded."""
    findings = merge_findings([*known_format_findings(part), *encoded_findings(part)])
    return tuple((found.start, found.end, found.kind) for found in findings)
