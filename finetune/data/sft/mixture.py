"""Mixtures: how much of each recipe source goes into training, and instruction data alongside FIM samples.

Every source has `weight` (default 1) and `samples` (a fixed count, instead of a weight). For instruction sources a
weight multiplies the records (0.5 = a random half, 3 = each three times) and `samples: N` gives exactly N training
records (a random subset, or repeats when there are fewer). For document sources (repo, jsonl, text, dataset) both
only ever keep a subset of the files, since a repeated file would be an exact duplicate. Which records get the
fractional extra copy, and which files are kept, is decided by a hash of where they come from, so a source that grows
keeps its earlier choices. Instruction records are split into train/eval like files (hash of the record's location),
weights apply to the training side, and the training list of FIM samples and conversations is shuffled with the
recipe seed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from finetune.data.holdout import held_out_records
from finetune.data.sft.chat import ChatEncoder, resolve_template, setup_chat_tokenizer
from finetune.data.sft.decontam import Decontaminator
from finetune.data.sft.records import Conversation, InstructionFile, SftReport, load_conversations
from finetune.data.types import Document

if TYPE_CHECKING:
    from finetune.config.schema import DataSection, Recipe
    from finetune.data.ingest.scrub import Scrubber


def _rank(*parts: str) -> bytes:
    return hashlib.sha256("\0".join(parts).encode("utf-8", errors="surrogatepass")).digest()


def repeat_counts(keys: Sequence[str], weight: float = 1.0, samples: int | None = None) -> list[int]:
    """How many times each of `keys` is used: `samples` in total (or round(weight * n)), spread as evenly as possible.

    The records that get one copy more than the rest are those with the lowest hash of their key.
    """
    n = len(keys)
    if n == 0:
        return []
    total = samples if samples is not None else round(weight * n)
    whole, extra = divmod(max(0, total), n)
    lucky = set(sorted(range(n), key=lambda i: _rank(keys[i]))[:extra])
    return [whole + (i in lucky) for i in range(n)]


def select_documents(docs: list[Document], source: Any) -> list[Document]:
    """The files of a document source that its `weight` (at most 1) or `samples` (a cap) keep, in their order."""
    weight = getattr(source, "weight", 1.0)
    samples = getattr(source, "samples", None)
    if samples is None and weight >= 1:
        return docs
    counts = repeat_counts([f"{source.path}\0{d.path}" for d in docs], min(weight, 1.0), samples)
    return [doc for doc, count in zip(docs, counts, strict=True) if count > 0]


def instruction_sources(data: DataSection) -> list[Any]:
    return [s for s in data.sources if s.type == "instructions"]


def has_instructions(data: DataSection) -> bool:
    return bool(instruction_sources(data))


def chat_setup(tokenizer: Any, data: DataSection, family: str | None) -> tuple[ChatEncoder, int]:
    """Give the tokenizer the run's chat template (and its tokens); returns the chat encoder and how many tokens were
    added. Called once, by `data.tokenize.setup.load_encoder`, before anything is tokenized, so the saved tokenizer
    carries the template training used.
    """
    sft = data.sft
    template = resolve_template(tokenizer, sft.template, sft.chat_template, family)
    added = setup_chat_tokenizer(tokenizer, template, sft.system_prompt, sft.add_chat_tokens)
    return ChatEncoder(tokenizer, tokenizer.chat_template, template.name), added


@dataclass
class SftData:
    """A recipe's instruction conversations, split and weighted, with the encoder that turns them into rows."""

    chat: ChatEncoder
    train: list[Conversation]
    eval: list[Conversation]
    report: SftReport

    @classmethod
    def load(
        cls, recipe: Recipe, chat: ChatEncoder | None, scrubber: Scrubber | None = None
    ) -> SftData | None:
        """None when the recipe has no instruction source. `chat` is the encoder `chat_setup` returned for the run's
        tokenizer. Secrets are scrubbed from every turn by `scrubber` (a new one when none is given) unless the
        recipe says `scrub_secrets: false`."""
        from finetune.data.ingest.scrub import Scrubber

        sources = instruction_sources(recipe.data)
        if not sources:
            return None
        scrubber = (scrubber or Scrubber()) if recipe.data.scrub_secrets else None
        if chat is None:
            raise ValueError("instruction sources need the run's chat encoder: set the tokenizer up with chat_setup")
        decon = recipe.data.sft.decontaminate
        checker = (
            Decontaminator.from_files(decon.benchmarks, decon.field, decon.ngram, decon.threshold)
            if decon.benchmarks
            else None
        )
        report = SftReport()
        train: list[Conversation] = []
        evaluation: list[Conversation] = []
        for source in sources:
            spec = InstructionFile(source.path, source.format, dict(source.columns), source.on_bad_line, source.split)
            conversations, part = load_conversations(spec, scrubber)
            if checker is not None:
                clean = []
                for conv in conversations:
                    if checker.contaminated(conv.text):
                        part.skip("benchmark_overlap", conv.source)
                        part.records_kept -= 1
                    else:
                        clean.append(conv)
                conversations = clean
            # keyed by the record's file name and line, not the absolute path: moving the data keeps the split
            held = held_out_records([c.source for c in conversations], recipe.data.eval_split, recipe.seed)
            kept = [c for c, h in zip(conversations, held, strict=True) if not h]
            counts = repeat_counts([c.source for c in kept], source.weight, source.samples)
            weighted = [c for c, k in zip(kept, counts, strict=True) for _ in range(k)]
            part.train, part.eval = len(weighted), sum(held)
            train += weighted
            evaluation += [c for c, h in zip(conversations, held, strict=True) if h]
            report.merge(part)
        return cls(chat, train, evaluation, report)

    def mix(self, items: Sequence[Any], seed: int, train: bool = True) -> list[Any]:
        """FIM/plain items and this data's conversations in one list, shuffled with `seed`."""
        mixed = [*items, *(self.train if train else self.eval)]
        random.Random(seed).shuffle(mixed)
        return mixed
