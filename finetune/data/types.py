"""The model-agnostic units of the data pipeline.

A `Document` is one file (or record) of source text; a `Conversation` is one instruction record as turns; a `Sample`
is what one training example is made of, kept as text segments with roles until `data/tokenize/` turns it into token
ids for a model family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SampleMode = Literal["plain", "fim"]
# The label of a token that is not in the loss (PyTorch cross-entropy's and transformers' ignore_index).
IGNORE_INDEX = -100


@dataclass(frozen=True)
class Document:
    """One unit of source text: `path` is relative to its source (a repository file path, or a record id)."""

    path: str
    language: str
    text: str


@dataclass(frozen=True)
class Sample:
    """One training example as text segments.

    `plain`: next-token prediction on `text`. `fim`: `prefix + middle + suffix` is the original text; `spm` picks
    the suffix-prefix-middle order instead of prefix-suffix-middle. `path`/`language` feed the families that put a
    file header in front of the code (aiXcoder).
    """

    mode: SampleMode
    path: str = ""
    language: str = ""
    text: str = ""
    prefix: str = ""
    middle: str = ""
    suffix: str = ""
    spm: bool = False
    node_type: str | None = None

    @property
    def original(self) -> str:
        """The document text this sample was cut from."""
        return self.text if self.mode == "plain" else self.prefix + self.middle + self.suffix


Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Conversation:
    """One instruction record as turns of (role, text); `source` says where it came from (`file:line 12`)."""

    turns: tuple[tuple[Role, str], ...]
    source: str
    shape: str

    @property
    def text(self) -> str:
        """All turns' text, for decontamination."""
        return "\n".join(text for _, text in self.turns)

    def messages(self) -> list[dict[str, str]]:
        """The turns as chat-template messages."""
        return [{"role": role, "content": text} for role, text in self.turns]
