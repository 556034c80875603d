"""Documents -> samples: structured FIM, random FIM or plain next-token, chosen per window by the recipe's rates.

Each document draws from its own random generator (seeded by the run seed and the document), so its samples do not
depend on the other files. A document too long for one sequence is cut into line-aligned windows first, and each
window gets its own draw at the recipe's rates (a structured middle is chosen inside its window, from one parse of
the whole file), so the rates hold on repositories of long files as on short ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from functools import cached_property

from finetune.config.schema import FimSection
from finetune.data.fim.random_span import document_rng, random_fim, split_long_document
from finetune.data.fim.structured import SpanIndex, Window, find_spans, structured_fim
from finetune.data.types import Document, Sample


def _plain(doc: Document) -> Sample:
    return Sample(mode="plain", path=doc.path, language=doc.language, text=doc.text)


class _FileSpans:
    """The structured candidates of one long file, parsed on first use and shared by its windows."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc

    @cached_property
    def index(self) -> SpanIndex | None:
        source = self.doc.text.encode("utf-8", "surrogatepass")
        spans = find_spans(source, self.doc.language)
        return SpanIndex(spans, source) if spans is not None else None


def _windows(doc: Document, max_chars: int) -> list[tuple[Document, Window | None]]:
    """The document's line-aligned windows with their byte bounds (None for a document that fits whole)."""
    chunks = split_long_document(doc, max_chars)
    if len(chunks) == 1:
        return [(chunks[0], None)]
    windows, offset = [], 0
    for chunk in chunks:
        size = len(chunk.text.encode("utf-8", "surrogatepass"))
        windows.append((chunk, Window(offset, offset + size)))
        offset += size
    return windows


def make_samples(
    docs: Iterable[Document], fim: FimSection, *, seed: int, max_chars: int, stats: Counter[str]
) -> Iterator[Sample]:
    """Samples for `docs`, counting in `stats` files -> windows -> samples by kind (and why a structured one fell
    back, and how many files with parse errors still gave structured samples)."""
    weights = fim.categories.weights()
    for doc in docs:
        rng = document_rng(doc, seed)
        windows = _windows(doc, max_chars)
        stats["files"] += 1
        stats["windows"] += len(windows)
        spans = _FileSpans(doc)
        file_flags: set[str] = set()
        for chunk, window in windows:
            roll, spm = rng.random(), rng.random() < fim.spm_rate
            if roll < fim.structured_rate:
                index = spans.index if window is not None else None
                result = structured_fim(doc, rng, spm=spm, weights=weights, window=window, index=index)
                if result.sample is not None:
                    stats["structured_fim"] += 1
                    file_flags.add("structured")
                    if result.despite_errors:
                        file_flags.add("error")
                    yield result.sample
                    continue
                stats[f"structured_fallback_{result.reason}"] += 1
                if result.reason == "parse_error":
                    file_flags.add("error")
                kind = fim.fallback
            elif roll < fim.structured_rate + fim.random_rate:
                kind = "random"
            else:
                kind = "plain"
            if kind == "skip":
                continue
            stats[f"{kind}_{'fim' if kind == 'random' else 'text'}"] += 1
            yield random_fim(chunk, rng, spm=spm) if kind == "random" else _plain(chunk)
        if "error" in file_flags:
            stats["files_with_parse_errors"] += 1
            stats["files_with_parse_errors_structured"] += "structured" in file_flags


def describe_flow(stats: Counter[str] | dict[str, int]) -> list[str]:
    """What the files became, as lines for people: files -> windows -> samples by kind, then fallbacks, parse
    errors and tokenizer overflow, so the realised FIM rates can be checked against the recipe's."""
    if not stats.get("files"):
        return []
    windows = stats["windows"]
    kinds = {"structured FIM": stats.get("structured_fim", 0), "random FIM": stats.get("random_fim", 0),
             "plain": stats.get("plain_text", 0)}  # fmt: skip
    shares = ", ".join(f"{name} {count:,} ({100 * count / max(windows, 1):.0f}%)" for name, count in kinds.items())
    lines = [f"{stats['files']:,} files -> {windows:,} windows (one per sequence-sized piece) -> {shares}"]
    fallbacks = {k.removeprefix("structured_fallback_"): v for k, v in stats.items() if k.startswith("structured_")
                 and k != "structured_fim"}  # fmt: skip
    if fallbacks:
        why = ", ".join(f"{reason.replace('_', ' ')} {count:,}" for reason, count in sorted(fallbacks.items()))
        lines.append(f"structured FIM fell back to the recipe's fallback in {sum(fallbacks.values()):,} windows ({why})")
    if stats.get("files_with_parse_errors"):
        lines.append(
            f"{stats['files_with_parse_errors']:,} files had parse errors; {stats.get('files_with_parse_errors_structured', 0):,}"
            " of them still gave structured samples from their error-free parts"
        )
    if stats.get("overflow_split"):
        lines.append(f"{stats['overflow_split']:,} samples were longer than max_length after tokenizing: cut into plain chunks")
    return lines
