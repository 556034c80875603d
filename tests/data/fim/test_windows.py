"""Long files: each line-aligned window gets its own FIM/plain draw, and a structured middle lies inside its window;
files with a local parse error still give structured samples from their error-free parts."""

from __future__ import annotations

from collections import Counter

import pytest

from finetune.config.schema import FimSection
from finetune.data.fim.random_span import split_long_document
from finetune.data.fim.structured import find_spans
from finetune.data.fim.transforms import describe_flow, make_samples
from finetune.data.types import Document


def _long_python(index: int, functions: int = 60) -> Document:
    body = "".join(
        f"def f_{index}_{k}(value, other):\n"
        f"    total = value * {k} + other\n"
        f"    if total > {k * 3}:\n"
        f"        return helper_{k}(total, other)\n"
        f"    return total - {k}\n\n\n"
        for k in range(functions)
    )
    return Document(f"pkg/module_{index}.py", "python", body)


@pytest.mark.parametrize(("structured", "random_rate"), [(0.7, 0.0), (0.5, 0.2), (0.2, 0.5)])
def test_realised_rates_follow_the_recipe_on_long_files(structured: float, random_rate: float) -> None:
    docs = [_long_python(i) for i in range(40)]  # each about 8 windows of 1,000 characters
    fim = FimSection(structured_rate=structured, random_rate=random_rate, spm_rate=0.5)
    stats: Counter[str] = Counter()
    samples = list(make_samples(docs, fim, seed=3, max_chars=1000, stats=stats))
    windows = stats["windows"]
    assert stats["files"] == 40 and windows >= 40 * 6 and len(samples) == windows
    assert abs(stats["structured_fim"] / windows - structured) < 0.05
    assert abs(stats["random_fim"] / windows - random_rate) < 0.05
    assert stats["structured_fim"] + stats["random_fim"] + stats["plain_text"] == windows


def test_each_window_sample_is_exactly_its_window_and_the_middle_a_node_inside_it() -> None:
    doc = _long_python(0)
    chunks = [chunk.text for chunk in split_long_document(doc, 700)]
    fim = FimSection(structured_rate=1.0, random_rate=0.0, spm_rate=0.0)
    samples = list(make_samples([doc], fim, seed=0, max_chars=700, stats=Counter()))
    assert len(samples) == len(chunks) > 5
    for sample, chunk in zip(samples, chunks, strict=True):
        assert sample.mode == "fim" and sample.node_type and sample.node_type.startswith("python:")
        assert sample.prefix + sample.middle + sample.suffix == chunk
    assert "".join(s.prefix + s.middle + s.suffix for s in samples) == doc.text


def test_windows_are_drawn_independently_so_a_long_file_mixes_kinds() -> None:
    fim = FimSection(structured_rate=0.5, random_rate=0.0, spm_rate=0.5)
    samples = list(make_samples([_long_python(1, functions=200)], fim, seed=1, max_chars=800, stats=Counter()))
    modes = Counter(sample.mode for sample in samples)
    assert modes["fim"] > 10 and modes["plain"] > 10


C_WITH_ONE_BAD_MACRO = """#include <stdio.h>

BROKEN_MACRO(int, x y z;

static int add(int a, int b) {
    int sum = a + b;
    return sum;
}

static int twice(int a) {
    return add(a, a);
}
"""


def test_a_local_parse_error_keeps_the_clean_parts_structured() -> None:
    spans = find_spans(C_WITH_ONE_BAD_MACRO.encode(), "c")
    assert spans is not None and spans.has_error
    functions = [C_WITH_ONE_BAD_MACRO.encode()[a:b].decode() for a, b, _ in spans["function"]]
    assert any(f.startswith("static int add(") and f.endswith("}") for f in functions)
    assert all("BROKEN_MACRO" not in text for found in spans.values() for a, b, _ in found
               for text in [C_WITH_ONE_BAD_MACRO.encode()[a:b].decode()])
    stats: Counter[str] = Counter()
    fim = FimSection(structured_rate=1.0, random_rate=0.0, spm_rate=0.0)
    docs = [Document(f"src/f{i}.c", "c", C_WITH_ONE_BAD_MACRO) for i in range(10)]
    samples = list(make_samples(docs, fim, seed=0, max_chars=10_000, stats=stats))
    assert all(sample.mode == "fim" and "BROKEN_MACRO" not in sample.middle for sample in samples)
    assert stats["structured_fim"] == 10
    assert stats["files_with_parse_errors"] == 10 and stats["files_with_parse_errors_structured"] == 10


def test_a_file_that_is_all_error_still_falls_back() -> None:
    stats: Counter[str] = Counter()
    fim = FimSection(structured_rate=1.0, random_rate=0.0, spm_rate=0.0)
    samples = list(make_samples([Document("x.c", "c", "}}}} ((( ;;; ]]]\n")], fim, seed=0, max_chars=100, stats=stats))
    assert samples[0].mode == "fim" and stats["structured_fallback_parse_error"] == 1
    assert stats["files_with_parse_errors"] == 1 and stats["files_with_parse_errors_structured"] == 0


def test_the_flow_lines_explain_files_windows_and_kinds() -> None:
    stats: Counter[str] = Counter()
    docs = [_long_python(i) for i in range(5)] + [Document("bad.c", "c", C_WITH_ONE_BAD_MACRO)]
    fim = FimSection(structured_rate=0.6, random_rate=0.2, spm_rate=0.5)
    list(make_samples(docs, fim, seed=0, max_chars=1000, stats=stats))
    stats["overflow_split"] = 2
    lines = describe_flow(stats)
    windows = stats["windows"]
    assert lines[0].startswith(f"6 files -> {windows} windows")
    assert f"structured FIM {stats['structured_fim']} (" in lines[0] and f"plain {stats['plain_text']} (" in lines[0]
    assert any("cut into plain chunks" in line and line.startswith("2 ") for line in lines)
    assert describe_flow(Counter()) == []
