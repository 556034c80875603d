"""Recipe -> tokenized train/eval datasets (`input_ids` + `labels`), the last step before the trainer.

Documents are split into train and eval by a hash of their path, stratified by language, so the split is stable when
files are added and can be recorded and reused by evaluation. Long documents are cut at line boundaries to fit `max_length`; a sample
that still overflows is kept as plain next-token chunks rather than silently truncated, and counted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset

from finetune.config.schema import Recipe
from finetune.data.context.layout import ContextSample, neighbor_snippets, with_context, with_retrieved_context
from finetune.data.context.ordering import order_files
from finetune.data.context.retrieval import RepoRetriever, Snippet
from finetune.data.fim.transforms import describe_flow, make_samples
from finetune.data.holdout import held_out_files
from finetune.data.ingest.scrub import Scrubber
from finetune.data.ingest.sources import load_data_documents
from finetune.data.ingest.walk import IngestReport
from finetune.data.sft.chat import ChatEncoder
from finetune.data.sft.mixture import SftData
from finetune.data.sft.records import Conversation
from finetune.data.tokenize.encoder import SampleEncoder
from finetune.data.types import IGNORE_INDEX, Document, Sample
from finetune.errors import UserError

# Room left in each sequence for special tokens and a header, when sizing document chunks.
_RESERVED_TOKENS = 64


@dataclass
class PreparedData:
    """Tokenized datasets plus everything a run should record about how they were made (JSON-able)."""

    train: Dataset
    eval: Dataset | None
    ingest: dict
    ingest_lines: list[str]
    eval_paths: list[str]
    stats: dict[str, int] = field(default_factory=dict)

    def report(self) -> dict:
        return {
            "ingest": self.ingest,
            "ingest_summary": self.ingest_lines,
            "samples": self.stats,
            "eval_paths": self.eval_paths,
        }


def split_documents(documents: list[Document], fraction: float, seed: int) -> tuple[list[Document], list[Document]]:
    """Train/eval split by document, stratified by language (`holdout.held_out_files`)."""
    held = held_out_files([doc.path for doc in documents], [doc.language for doc in documents], fraction, seed)
    train = [doc for doc, h in zip(documents, held, strict=True) if not h]
    evaluation = [doc for doc, h in zip(documents, held, strict=True) if h]
    return train, evaluation


def chars_per_token(encoder: SampleEncoder, documents: list[Document], budget: int = 200_000) -> float:
    """Characters per token measured on up to `budget` characters of the data (sizes document chunks)."""
    text = "".join(doc.text for doc in documents)[:budget]
    n_tokens = len(encoder.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
    return max(1.0, len(text) / max(1, n_tokens))


def encode_sample(encoder: SampleEncoder, item: Sample | ContextSample) -> tuple[Sample, dict[str, list[int]]]:
    """The sample and its ids and labels, with its repository context in front when it has one."""
    if isinstance(item, ContextSample):
        return item.sample, encoder.encode_in_context(item.sample, item.context, item.lead)
    return item, encoder.encode(item)


def encode_samples(
    samples: list[Sample | ContextSample | Conversation],
    encoder: SampleEncoder,
    max_length: int,
    stats: Counter[str],
    chat: ChatEncoder | None = None,
) -> Dataset:
    """Token ids and labels for each sample; overflowing samples become plain max_length chunks (counted).

    Conversations (instruction data) are encoded by `chat`; they lose prompt text first when too long (`chat.py`).
    """
    input_ids: list[list[int]] = []
    labels: list[list[int]] = []
    for item in samples:
        if isinstance(item, Conversation):
            chat_row = chat.encode_counted(item, max_length, stats) if chat is not None else None
            if chat_row is not None:
                input_ids.append(chat_row.input_ids)
                labels.append(chat_row.labels)
                stats["chat_samples"] += 1
            continue
        sample, row = encode_sample(encoder, item)
        stats["with_context"] += isinstance(item, ContextSample) and bool(item.context_chars)
        if len(row["input_ids"]) <= max_length:
            input_ids.append(row["input_ids"])
            labels.append(row["labels"])
            stats[f"{sample.mode}_samples"] += 1
            continue
        stats["overflow_split"] += 1
        if sample.mode != "plain":
            row = encoder.encode(Sample(mode="plain", path=sample.path, language=sample.language, text=sample.original))
        for start in range(0, len(row["input_ids"]), max_length):
            chunk = row["input_ids"][start : start + max_length]
            if len(chunk) > 1:
                input_ids.append(chunk)
                labels.append(row["labels"][start : start + max_length])
                stats["plain_samples"] += 1
    stats["tokens"] += sum(len(ids) for ids in input_ids)
    stats["loss_tokens"] += sum(sum(1 for t in row if t != IGNORE_INDEX) for row in labels)
    return Dataset.from_dict({"input_ids": input_ids, "labels": labels})


def _repo_name(recipe: Recipe) -> str:
    """The first repository source's folder name, for `<repo_name>`."""
    repos = [Path(s.path).resolve().name for s in recipe.data.sources if s.type == "repo"]
    return repos[0] if repos else ""


@dataclass
class ContextPlan:
    """How the recipe puts repository context in front of samples: retrieval and/or ordered neighbour files."""

    retriever: RepoRetriever | None
    neighbors: dict[str, list[Snippet]]
    budget_chars: int
    k: int
    family: str | None
    repo_name: str

    @classmethod
    def from_recipe(
        cls, recipe: Recipe, encoder: SampleEncoder, documents: list[Document], train_docs: list[Document]
    ) -> ContextPlan | None:
        context = recipe.data.context
        if not context.retrieval and not context.neighbors:
            return None
        neighbors: dict[str, list[Snippet]] = {}
        if context.neighbors:
            ordered = order_files(documents, recipe.seed, context.order_randomness)
            share = context.budget_chars // (context.neighbors + (1 if context.retrieval else 0))
            neighbors = neighbor_snippets(ordered, context.neighbors, share, {d.path for d in train_docs})
        return cls(
            retriever=RepoRetriever(train_docs) if context.retrieval else None,
            neighbors=neighbors,
            budget_chars=context.budget_chars,
            k=context.k,
            family=encoder.family.name if encoder.has_repo_tokens else None,
            repo_name=context.repo_name if context.repo_name is not None else _repo_name(recipe),
        )

    def apply(self, sample: Sample) -> ContextSample:
        extra = self.neighbors.get(sample.path, [])
        common = {"budget_chars": self.budget_chars, "family": self.family, "repo_name": self.repo_name}
        if self.retriever is None:
            return with_context(sample, extra, **common)
        return with_retrieved_context(sample, self.retriever, k=self.k, extra=extra, **common)


def make_recipe_samples(
    recipe: Recipe, docs: list[Document], plan: ContextPlan | None, *, seed: int, max_chars: int, stats: Counter[str]
) -> list[Sample | ContextSample]:
    """The recipe's samples for `docs`, with repository context in front when the recipe asks for it."""
    budget = max(256, max_chars - (plan.budget_chars if plan else 0))
    samples = make_samples(docs, recipe.data.fim, seed=seed, max_chars=budget, stats=stats)
    return [plan.apply(s) for s in samples] if plan else list(samples)


def sequence_chars(recipe: Recipe, encoder: SampleEncoder, documents: list[Document]) -> int:
    """Characters of source that fit one training sequence, with room for special tokens and a header."""
    return int((recipe.data.max_length - _RESERVED_TOKENS) * chars_per_token(encoder, documents) * 0.9)


@dataclass
class RecipeSources:
    """The recipe's sources read, scrubbed and split, with what turns them into items: the one way to the samples
    for `prepare`, `train` and `data inspect`."""

    recipe: Recipe
    documents: list[Document]
    ingest: IngestReport
    train_docs: list[Document]
    eval_docs: list[Document]
    plan: ContextPlan | None
    max_chars: int
    sft: SftData | None  # None without instruction sources
    scrubber: Scrubber

    @classmethod
    def load(
        cls, recipe: Recipe, encoder: SampleEncoder, chat: ChatEncoder | None = None, max_chars: int | None = None
    ) -> RecipeSources:
        scrubber = Scrubber()  # one for all sources, so the report counts every secret once
        documents, ingest = load_data_documents(recipe.data, scrubber)
        train_docs, eval_docs = split_documents(documents, recipe.data.eval_split, recipe.seed)
        fits = sequence_chars(recipe, encoder, documents)
        return cls(
            recipe=recipe,
            documents=documents,
            ingest=ingest,
            train_docs=train_docs,
            eval_docs=eval_docs,
            plan=ContextPlan.from_recipe(recipe, encoder, documents, train_docs),
            max_chars=min(fits, max_chars) if max_chars else fits,
            sft=SftData.load(recipe, chat, scrubber),
            scrubber=scrubber,
        )

    def items(self, train: bool, stats: Counter[str]) -> list[Sample | ContextSample | Conversation]:
        """The train (or eval) samples and conversations, shuffled together as training sees them."""
        docs, seed = (self.train_docs, self.recipe.seed) if train else (self.eval_docs, self.recipe.seed + 1)
        items: list = make_recipe_samples(self.recipe, docs, self.plan, seed=seed, max_chars=self.max_chars, stats=stats)
        return self.sft.mix(items, seed, train=train) if self.sft else items


def prepare_data(recipe: Recipe, encoder: SampleEncoder, chat: ChatEncoder | None = None) -> PreparedData:
    """Load, scrub, split, transform and tokenize the recipe's data (`chat`: for instruction sources)."""
    sources = RecipeSources.load(recipe, encoder, chat)
    sft = sources.sft
    chat = sft.chat if sft else None
    stats: Counter[str] = Counter()
    train = encode_samples(sources.items(True, stats), encoder, recipe.data.max_length, stats, chat)
    if len(train) == 0:
        raise UserError("no training samples were produced: add data or lower data.eval_split")
    evaluation = None
    if sources.eval_docs or (sft and sft.eval):
        eval_stats: Counter[str] = Counter()
        evaluation = encode_samples(sources.items(False, eval_stats), encoder, recipe.data.max_length, eval_stats, chat)
    stats["train_documents"] = len(sources.train_docs)
    stats["eval_documents"] = len(sources.eval_docs)
    eval_paths = sorted(doc.path for doc in sources.eval_docs)
    ingest_report, ingest_lines = sources.ingest.to_dict(), sources.ingest.summary_lines()
    ingest_lines += describe_flow(stats)
    if sft:
        ingest_report["instructions"] = sft.report.to_dict()
        ingest_lines += sft.report.lines()
    if recipe.data.scrub_secrets:
        ingest_report["secrets"] = sources.scrubber.report.to_dict()
        ingest_lines += sources.scrubber.report.lines()
    return PreparedData(train, evaluation, ingest_report, ingest_lines, eval_paths, dict(stats))
