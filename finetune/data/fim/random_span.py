"""Random fill-in-the-middle at character level (the StarCoder / aiXcoder recipe).

A document is cut at two random character positions into prefix, middle and suffix; the model learns to write the
middle given both sides. Cuts are drawn from a per-document random generator seeded by the run seed and the
document itself, so a repository that gains a file keeps every other file's samples unchanged (and cached
datasets stay comparable between runs).
"""

from __future__ import annotations

import hashlib
import random

from finetune.data.types import Document, Sample


def random_fim(doc: Document, rng: random.Random, spm: bool) -> Sample:
    """A FIM sample cut at two positions drawn uniformly over 0..len(text); prefix + middle + suffix == text."""
    text = doc.text
    start, end = sorted((rng.randint(0, len(text)), rng.randint(0, len(text))))
    return Sample(
        mode="fim",
        path=doc.path,
        language=doc.language,
        prefix=text[:start],
        middle=text[start:end],
        suffix=text[end:],
        spm=spm,
    )


def document_rng(doc: Document, seed: int) -> random.Random:
    """A generator that depends only on the seed and this document, never on the documents around it.

    sha256 rather than `hash()`, which Python salts per process.
    """
    text_digest = hashlib.sha256(doc.text.encode("utf-8", errors="surrogatepass")).hexdigest()
    key = f"{seed}\0{doc.path}\0{text_digest}".encode("utf-8", errors="surrogatepass")
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:16], "big"))


def _lines(text: str) -> list[str]:
    """`text` split after each '\\n' only (str.splitlines also breaks at form feeds and U+2028)."""
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


def split_long_document(doc: Document, max_chars: int) -> list[Document]:
    """Consecutive chunks of at most `max_chars` characters, cut at line ends where a line fits.

    A single line longer than `max_chars` is cut hard. Chunks keep the path and language; joined, they are the text.
    """
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    if len(doc.text) <= max_chars:
        return [doc]
    chunks: list[str] = []
    current: list[str] = []  # lines of the chunk being built (a list: += on a str can go quadratic)
    size = 0
    for line in _lines(doc.text):
        if size + len(line) > max_chars and current:
            chunks.append("".join(current))
            current, size = [], 0
        while len(line) > max_chars:
            chunks.append(line[:max_chars])
            line = line[max_chars:]
        if line:
            current.append(line)
            size += len(line)
    if current:
        chunks.append("".join(current))
    return [Document(path=doc.path, language=doc.language, text=chunk) for chunk in chunks]
