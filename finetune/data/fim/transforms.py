"""Documents -> samples: structured FIM, random FIM or plain next-token, chosen per document by the recipe's rates.

Each document draws from its own random generator (seeded by the run seed and the document), so its sample does not
depend on the other files. A document too long for one sequence is handled by kind: structured FIM picks the node
first and then a window around it; random FIM and plain text are cut into line-aligned chunks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from finetune.config.schema import FimSection
from finetune.data.fim.random_span import document_rng, random_fim, split_long_document
from finetune.data.fim.structured import structured_fim
from finetune.data.types import Document, Sample


def _plain(doc: Document) -> Sample:
    return Sample(mode="plain", path=doc.path, language=doc.language, text=doc.text)


def make_samples(
    docs: Iterable[Document], fim: FimSection, *, seed: int, max_chars: int, stats: Counter[str]
) -> Iterator[Sample]:
    """Samples for `docs`, counting in `stats` what each document became (and why a structured one fell back)."""
    weights = fim.categories.weights()
    for doc in docs:
        rng = document_rng(doc, seed)
        roll, spm = rng.random(), rng.random() < fim.spm_rate
        if roll < fim.structured_rate:
            result = structured_fim(doc, rng, spm=spm, weights=weights, max_chars=max_chars)
            if result.sample is not None:
                stats["structured_fim"] += 1
                yield result.sample
                continue
            stats[f"structured_fallback_{result.reason}"] += 1
            kind = fim.fallback
        elif roll < fim.structured_rate + fim.random_rate:
            kind = "random"
        else:
            kind = "plain"
        if kind == "skip":
            continue
        for chunk in split_long_document(doc, max_chars):
            stats[f"{kind}_{'fim' if kind == 'random' else 'text'}"] += 1
            yield random_fim(chunk, rng, spm=spm) if kind == "random" else _plain(chunk)
