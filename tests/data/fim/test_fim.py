"""Random character-level FIM: exact reconstruction, rates, determinism, per-document stability, splitting."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from finetune.config.schema import FimSection
from finetune.data.fim.random_span import random_fim, split_long_document
from finetune.data.fim.transforms import make_samples as transform
from finetune.data.types import Document


def make_samples(docs, *, fim_rate: float, spm_rate: float, seed: int):
    """Random FIM at `fim_rate`, plain text otherwise, through the pipeline's transform."""
    fim = FimSection(structured_rate=0.0, random_rate=fim_rate, spm_rate=spm_rate)
    return transform(docs, fim, seed=seed, max_chars=10**9, stats=Counter())


def _docs(count: int, prefix: str = "file") -> list[Document]:
    return [Document(f"src/{prefix}_{i}.py", "python", f"def f{i}(x):\n    return x * {i}\n") for i in range(count)]


@given(text=st.text(), seed=st.integers(), spm=st.booleans())
@example(text="", seed=0, spm=False)
@example(text="x", seed=1, spm=True)
@example(text="🎉\r\n世界", seed=2, spm=False)
def test_random_fim_reconstructs_text_exactly(text: str, seed: int, spm: bool) -> None:
    sample = random_fim(Document("a/b.py", "python", text), random.Random(seed), spm)
    assert sample.prefix + sample.middle + sample.suffix == text
    assert sample.mode == "fim"
    assert sample.spm is spm
    assert (sample.path, sample.language) == ("a/b.py", "python")


def test_cut_points_cover_the_whole_text() -> None:
    doc = Document("a.py", "python", "x" * 99)
    rng = random.Random(0)
    samples = [random_fim(doc, rng, spm=False) for _ in range(3000)]
    middles = [len(sample.middle) for sample in samples]
    # Two uniform cuts over 0..99: the middle averages about a third of the text.
    assert 30 <= sum(middles) / len(middles) <= 37
    assert min(len(sample.prefix) for sample in samples) == 0
    assert min(len(sample.suffix) for sample in samples) == 0
    assert max(middles) >= 95


@given(texts=st.lists(st.text(max_size=50), max_size=20), seed=st.integers(0, 2**32))
@settings(max_examples=50)
def test_make_samples_keeps_every_text(texts: list[str], seed: int) -> None:
    docs = [Document(f"f{i}.py", "python", text) for i, text in enumerate(texts)]
    samples = list(make_samples(docs, fim_rate=0.5, spm_rate=0.5, seed=seed))
    assert [sample.original for sample in samples] == texts
    assert [sample.path for sample in samples] == [doc.path for doc in docs]


def test_rates_are_respected() -> None:
    samples = list(make_samples(_docs(1000), fim_rate=0.5, spm_rate=0.3, seed=7))
    fim = [sample for sample in samples if sample.mode == "fim"]
    assert 400 <= len(fim) <= 600
    assert 0.2 <= sum(sample.spm for sample in fim) / len(fim) <= 0.4
    plain = [sample for sample in samples if sample.mode == "plain"]
    assert all(sample.text and not sample.spm for sample in plain)


@pytest.mark.parametrize(("fim_rate", "spm_rate"), [(0.0, 0.5), (1.0, 0.0), (1.0, 1.0)])
def test_extreme_rates(fim_rate: float, spm_rate: float) -> None:
    samples = list(make_samples(_docs(200), fim_rate=fim_rate, spm_rate=spm_rate, seed=3))
    assert sum(sample.mode == "fim" for sample in samples) == round(200 * fim_rate)
    assert sum(sample.spm for sample in samples) == round(200 * fim_rate * spm_rate)


@pytest.mark.parametrize(("fim_rate", "spm_rate"), [(1.5, 0.5), (0.5, -0.1)])
def test_invalid_rates_are_rejected(fim_rate: float, spm_rate: float) -> None:
    with pytest.raises(ValidationError):
        list(make_samples(_docs(1), fim_rate=fim_rate, spm_rate=spm_rate, seed=0))


def test_same_seed_same_samples_other_seed_other_samples() -> None:
    docs = _docs(50)
    first = list(make_samples(docs, fim_rate=0.9, spm_rate=0.5, seed=11))
    assert first == list(make_samples(docs, fim_rate=0.9, spm_rate=0.5, seed=11))
    assert first != list(make_samples(docs, fim_rate=0.9, spm_rate=0.5, seed=12))


def test_adding_a_document_leaves_the_others_alone() -> None:
    docs = _docs(30)
    before = list(make_samples(docs, fim_rate=0.7, spm_rate=0.5, seed=5))
    added = Document("src/new.py", "python", "NEW = 1\n")
    after = list(make_samples([added, *docs[:10], added, *docs[10:]], fim_rate=0.7, spm_rate=0.5, seed=5))
    assert [sample for sample in after if sample.path != "src/new.py"] == before


def test_a_changed_document_gets_new_cuts() -> None:
    doc = Document("a.py", "python", "abcdefghijklmnopqrstuvwxyz" * 4)
    edited = Document("a.py", "python", doc.text + "!")
    cuts = {
        (sample.prefix, sample.middle)
        for seed in range(20)
        for sample in make_samples([doc, edited], fim_rate=1.0, spm_rate=0.0, seed=seed)
        if sample.original == doc.text
    }
    edited_cuts = {
        (sample.prefix, sample.middle)
        for seed in range(20)
        for sample in make_samples([edited], fim_rate=1.0, spm_rate=0.0, seed=seed)
    }
    assert len(cuts) > 10 and len(edited_cuts) > 10
    assert cuts != edited_cuts


@given(text=st.text(alphabet=st.sampled_from("ab\n\r é🎉"), max_size=300), max_chars=st.integers(1, 40))
@example(text="", max_chars=1)
@example(text="a" * 100, max_chars=7)
def test_split_long_document_reconstructs_and_bounds(text: str, max_chars: int) -> None:
    doc = Document("x/y.rs", "rust", text)
    chunks = split_long_document(doc, max_chars)
    assert "".join(chunk.text for chunk in chunks) == text
    assert all(chunk.path == "x/y.rs" and chunk.language == "rust" for chunk in chunks)
    if len(text) > max_chars:
        assert all(0 < len(chunk.text) <= max_chars for chunk in chunks)
    else:
        assert chunks == [doc]


def test_split_cuts_at_line_ends_when_lines_fit() -> None:
    text = "".join(f"line {i:03d} {'x' * (i % 17)}\n" for i in range(200))
    chunks = split_long_document(Document("a.py", "python", text), 100)
    assert len(chunks) > 1
    assert all(chunk.text.endswith("\n") for chunk in chunks)
    assert all(len(chunk.text) > 100 - 27 for chunk in chunks[:-1])  # greedy: nearly full


def test_split_rejects_non_positive_size() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        split_long_document(Document("a.py", "python", "abc"), 0)
