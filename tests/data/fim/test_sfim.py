"""Structured FIM: per-language node tables, exact byte-to-text slicing, fallbacks, windows and weights."""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tree_sitter import Node

from finetune.data.fim.grammars import GRAMMAR_MODULES, language_for, parser_for
from finetune.data.fim.structured import (
    CATEGORIES,
    DEFAULT_CATEGORY_WEIGHTS,
    NODE_TYPES,
    Spans,
    find_spans,
    structured_fim,
    window_for_span,
)
from finetune.data.types import Document
from finetune.errors import UserError


@dataclass(frozen=True)
class Fixture:
    """A small source and, per category, middles that must be among its candidates (exact text)."""

    language: str
    source: str
    expected: dict[str, list[str]]
    empty_before: str  # a line at whose start a zero-length middle must be offered
    missing: tuple[str, ...] = ()  # categories the language does not have


PYTHON = Fixture(
    "python",
    "import math\n\n\nclass Shape:\n    sides = 4\n\n\n"
    "def area(width, height=1) -> int:\n    total = width * height\n    if total > 10:\n"
    "        return scale(total, factor=2)\n    log(total)\n    return total\n",
    {
        "function": [
            "def area(width, height=1) -> int:\n    total = width * height\n    if total > 10:\n"
            "        return scale(total, factor=2)\n    log(total)\n    return total"
        ],
        "signature": ["def area(width, height=1) -> int:"],
        "body": [
            "total = width * height\n    if total > 10:\n        return scale(total, factor=2)\n"
            "    log(total)\n    return total"
        ],
        "class": ["class Shape:\n    sides = 4"],
        "block": ["if total > 10:\n        return scale(total, factor=2)"],
        "statement": ["total = width * height", "log(total)\n    return total", "import math"],
        "line": ["        return scale(total, factor=2)", "    log(total)"],
        "expression": ["width * height", "scale(total, factor=2)", "total > 10"],
        "arguments": ["total, factor=2"],
    },
    empty_before="    log(total)",
)

_C_LIKE_BODY = (
    "{\n    int total = width * height;\n    if (total > 10) {\n        return scale(total, 2);\n    }\n"
    "    log_value(total);\n    return total;\n}"
)
C = Fixture(
    "c",
    "#include <stdio.h>\n\nstruct shape {\n    int sides;\n};\n\nint area(int width, int height) "
    + _C_LIKE_BODY
    + "\n",
    {
        "function": ["int area(int width, int height) " + _C_LIKE_BODY],
        "signature": ["int area(int width, int height)"],
        "body": [_C_LIKE_BODY],
        "class": ["struct shape {\n    int sides;\n}"],
        "block": ["if (total > 10) {\n        return scale(total, 2);\n    }"],
        "statement": ["int total = width * height;", "log_value(total);\n    return total;"],
        "line": ["        return scale(total, 2);", "    }"],
        "expression": ["width * height", "scale(total, 2)"],
        "arguments": ["total, 2"],
    },
    empty_before="    log_value(total);",
)

_CPP_BODY = (
    "{\n    auto total = width * height;\n    for (int i = 0; i < 2; i++) {\n        total += scale(total, i);\n"
    "    }\n    log_value(total);\n    return total;\n}"
)
CPP = Fixture(
    "c++",
    "#include <vector>\n\nclass Shape {\n  public:\n    int sides = 4;\n};\n\nint area(int width, int height) "
    + _CPP_BODY
    + "\n",
    {
        "function": ["int area(int width, int height) " + _CPP_BODY],
        "signature": ["int area(int width, int height)"],
        "body": [_CPP_BODY],
        "class": ["class Shape {\n  public:\n    int sides = 4;\n}"],
        "block": ["for (int i = 0; i < 2; i++) {\n        total += scale(total, i);\n    }"],
        "statement": ["auto total = width * height;", "log_value(total);\n    return total;"],
        "line": ["        total += scale(total, i);"],
        "expression": ["width * height", "scale(total, i)", "i < 2"],
        "arguments": ["total, i"],
    },
    empty_before="    log_value(total);",
)

_JAVA_METHOD = (
    "int area(int width, int height) {\n        int total = width * height;\n        if (total > 10) {\n"
    "            return scale(total, 2);\n        }\n        log(total);\n        return total;\n    }"
)
JAVA = Fixture(
    "java",
    "import java.util.List;\n\nclass Shape {\n    int sides = 4;\n\n    " + _JAVA_METHOD + "\n}\n",
    {
        "function": [_JAVA_METHOD],
        "signature": ["int area(int width, int height)"],
        "body": [_JAVA_METHOD[len("int area(int width, int height) ") :]],
        "class": ["class Shape {\n    int sides = 4;\n\n    " + _JAVA_METHOD + "\n}"],
        "block": ["if (total > 10) {\n            return scale(total, 2);\n        }"],
        "statement": ["int total = width * height;", "log(total);\n        return total;", "import java.util.List;"],
        "line": ["            return scale(total, 2);"],
        "expression": ["width * height", "scale(total, 2)"],
        "arguments": ["total, 2"],
    },
    empty_before="        log(total);",
)

_CS_METHOD = (
    "int Area(int width, int height)\n    {\n        var total = width * height;\n        foreach (var s in sides)\n"
    "        {\n            total += Scale(total, s);\n        }\n        Log(total);\n        return total;\n    }"
)
CSHARP = Fixture(
    "c#",
    "using System;\n\nclass Shape\n{\n    " + _CS_METHOD + "\n}\n",
    {
        "function": [_CS_METHOD],
        "signature": ["int Area(int width, int height)"],
        "body": [_CS_METHOD[len("int Area(int width, int height)\n    ") :]],
        "class": ["class Shape\n{\n    " + _CS_METHOD + "\n}"],
        "block": ["foreach (var s in sides)\n        {\n            total += Scale(total, s);\n        }"],
        "statement": ["var total = width * height;", "Log(total);\n        return total;", "using System;"],
        "line": ["            total += Scale(total, s);", "    {"],
        "expression": ["width * height", "Scale(total, s)"],
        "arguments": ["total, s"],
    },
    empty_before="        Log(total);",
)

_JS_FUNCTION = (
    "function area(width, height) {\n  const total = width * height;\n  if (total > 10) {\n"
    "    return scale(total, 2);\n  }\n  log(total);\n  return total;\n}"
)
_JS_EXPECTED = {
    "function": [_JS_FUNCTION],
    "signature": ["function area(width, height)"],
    "body": [_JS_FUNCTION[len("function area(width, height) ") :]],
    "class": ["class Shape {\n  constructor() {\n    this.sides = 4;\n  }\n}"],
    "block": ["if (total > 10) {\n    return scale(total, 2);\n  }"],
    "statement": [
        "const total = width * height;",
        "log(total);\n  return total;",
        'import { scale } from "./scale.js";',
    ],
    "line": ["    return scale(total, 2);"],
    "expression": ["width * height", "scale(total, 2)"],
    "arguments": ["total, 2"],
}
_JS_SOURCE = (
    'import { scale } from "./scale.js";\n\nclass Shape {\n  constructor() {\n    this.sides = 4;\n  }\n}\n\n'
    + _JS_FUNCTION
    + "\n"
)
JAVASCRIPT = Fixture("javascript", _JS_SOURCE, _JS_EXPECTED, empty_before="  log(total);")
_BADGE = 'const Badge = ({ label }) => <span className="badge">{label}</span>;\n'
JSX = Fixture(
    "jsx",
    _JS_SOURCE + _BADGE,
    {**_JS_EXPECTED, "expression": ['<span className="badge">{label}</span>', "width * height"]},
    empty_before="  log(total);",
)

_TS_FUNCTION = (
    "function area(width: number, height: number): number {\n  const total: number = width * height;\n"
    "  if (total > 10) {\n    return scale(total, 2);\n  }\n  log(total);\n  return total;\n}"
)
_TS_EXPECTED = {
    "function": [_TS_FUNCTION],
    "signature": ["function area(width: number, height: number): number"],
    "body": [_TS_FUNCTION[len("function area(width: number, height: number): number ") :]],
    "class": ["interface Shape {\n  sides: number;\n}"],
    "block": ["if (total > 10) {\n    return scale(total, 2);\n  }"],
    "statement": ["const total: number = width * height;", "log(total);\n  return total;", "type Size = number;"],
    "line": ["    return scale(total, 2);"],
    "expression": ["width * height", "scale(total, 2)"],
    "arguments": ["total, 2"],
}
_TS_SOURCE = "type Size = number;\n\ninterface Shape {\n  sides: number;\n}\n\n" + _TS_FUNCTION + "\n"
TYPESCRIPT = Fixture("typescript", _TS_SOURCE, _TS_EXPECTED, empty_before="  log(total);")
TSX = Fixture(
    "tsx",
    _TS_SOURCE + "const Badge = ({ label }: { label: string }) => <b>{label}</b>;\n",
    {**_TS_EXPECTED, "expression": ["<b>{label}</b>", "scale(total, 2)"]},
    empty_before="  log(total);",
)

_GO_FUNCTION = (
    "func Area(width, height int) int {\n\ttotal := width * height\n\tif total > 10 {\n\t\treturn scale(total, 2)\n"
    "\t}\n\tlog(total)\n\treturn total\n}"
)
GO = Fixture(
    "go",
    'package shapes\n\nimport "fmt"\n\ntype Shape struct {\n\tSides int\n}\n\n' + _GO_FUNCTION + "\n",
    {
        "function": [_GO_FUNCTION],
        "signature": ["func Area(width, height int) int"],
        "body": [_GO_FUNCTION[len("func Area(width, height int) int ") :]],
        "class": ["type Shape struct {\n\tSides int\n}"],
        "block": ["if total > 10 {\n\t\treturn scale(total, 2)\n\t}"],
        "statement": ["total := width * height", "log(total)\n\treturn total", 'import "fmt"'],
        "line": ["\t\treturn scale(total, 2)"],
        "expression": ["width * height", "scale(total, 2)"],
        "arguments": ["total, 2"],
    },
    empty_before="\tlog(total)",
)

_RUST_FUNCTION = (
    "fn area(width: u32, height: u32) -> u32 {\n    let total = width * height;\n    if total > 10 {\n"
    "        return scale(total, 2);\n    }\n    log(total);\n    return total;\n}"
)
RUST = Fixture(
    "rust",
    "use std::fmt;\n\nstruct Shape {\n    sides: u32,\n}\n\n" + _RUST_FUNCTION + "\n",
    {
        "function": [_RUST_FUNCTION],
        "signature": ["fn area(width: u32, height: u32) -> u32"],
        "body": [_RUST_FUNCTION[len("fn area(width: u32, height: u32) -> u32 ") :]],
        "class": ["struct Shape {\n    sides: u32,\n}"],
        "block": ["if total > 10 {\n        return scale(total, 2);\n    }"],
        "statement": ["let total = width * height;", "log(total);\n    return total;", "use std::fmt;"],
        "line": ["        return scale(total, 2);"],
        "expression": ["width * height", "scale(total, 2)"],
        "arguments": ["total, 2"],
    },
    empty_before="    log(total);",
)

_PHP_FUNCTION = (
    "function area($width, $height) {\n    $total = $width * $height;\n    if ($total > 10) {\n"
    "        return scale($total, 2);\n    }\n    log_value($total);\n    return $total;\n}"
)
PHP = Fixture(
    "php",
    "<?php\n\nclass Shape {\n    public $sides = 4;\n}\n\n" + _PHP_FUNCTION + "\n",
    {
        "function": [_PHP_FUNCTION],
        "signature": ["function area($width, $height)"],
        "body": [_PHP_FUNCTION[len("function area($width, $height) ") :]],
        "class": ["class Shape {\n    public $sides = 4;\n}"],
        "block": ["if ($total > 10) {\n        return scale($total, 2);\n    }"],
        "statement": ["$total = $width * $height;", "log_value($total);\n    return $total;"],
        "line": ["        return scale($total, 2);"],
        "expression": ["$width * $height", "scale($total, 2)"],
        "arguments": ["$total, 2"],
    },
    empty_before="    log_value($total);",
)

_RUBY_BODY = "total = width * height\n  if total > 10\n    return scale(total, 2)\n  end\n  log(total)\n  return total"
RUBY = Fixture(
    "ruby",
    'require "set"\n\nclass Shape\n  SIDES = 4\nend\n\ndef area(width, height)\n  ' + _RUBY_BODY + "\nend\n",
    {
        "function": ["def area(width, height)\n  " + _RUBY_BODY + "\nend"],
        "signature": ["def area(width, height)"],
        "body": [_RUBY_BODY],
        "class": ["class Shape\n  SIDES = 4\nend"],
        "block": ["if total > 10\n    return scale(total, 2)\n  end"],
        "statement": ["total = width * height", "log(total)\n  return total", 'require "set"'],
        "line": ["    return scale(total, 2)", "  end"],
        "expression": ["width * height", "scale(total, 2)"],
        "arguments": ["total, 2"],
    },
    empty_before="  log(total)",
)

_SHELL_BODY = (
    '{\n    local total=$((WIDTH * HEIGHT))\n    if [ "$total" -gt 10 ]; then\n        scale "$total" 2\n    fi\n'
    '    log "$total"\n    echo "$total"\n}'
)
SHELL = Fixture(
    "shell",
    "#!/bin/bash\nset -e\n\narea() " + _SHELL_BODY + "\n",
    {
        "function": ["area() " + _SHELL_BODY],
        "signature": ["area()"],
        "body": [_SHELL_BODY],
        "block": ['if [ "$total" -gt 10 ]; then\n        scale "$total" 2\n    fi'],
        "statement": [
            "local total=$((WIDTH * HEIGHT))",
            'log "$total"\n    echo "$total"',
            "set -e",
            'scale "$total" 2',
        ],
        "line": ['        scale "$total" 2'],
        "expression": ["$((WIDTH * HEIGHT))", "WIDTH * HEIGHT"],
    },
    empty_before='    log "$total"',
    missing=("class", "arguments"),
)

FIXTURES = [PYTHON, JAVA, JAVASCRIPT, JSX, TYPESCRIPT, TSX, C, CPP, CSHARP, GO, RUST, PHP, RUBY, SHELL]


def _spans(fixture: Fixture) -> tuple[bytes, Spans]:
    source = fixture.source.encode()
    spans = find_spans(source, fixture.language)
    assert spans is not None and not spans.has_error
    return source, spans


def _texts(source: bytes, spans: Spans, category: str) -> list[str]:
    return [source[start:end].decode() for start, end, _ in spans[category]]


def test_fixtures_cover_every_grammar() -> None:
    assert {fixture.language for fixture in FIXTURES} == set(GRAMMAR_MODULES)
    assert all(language_for(language) is not None for language in GRAMMAR_MODULES)  # every grammar installed


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda fixture: fixture.language)
def test_each_category_finds_the_literal_middles(fixture: Fixture) -> None:
    source, spans = _spans(fixture)
    assert set(fixture.expected) | {"empty"} | set(fixture.missing) == set(CATEGORIES)
    for category, middles in fixture.expected.items():
        texts = _texts(source, spans, category)
        for middle in middles:
            assert middle in texts, (category, middle, texts)
    for category in fixture.missing:
        assert spans[category] == []
    line_start = fixture.source.index("\n" + fixture.empty_before + "\n") + 1
    assert (line_start, line_start, "empty") in spans["empty"]


def _node_with_range(root: Node, start: int, end: int) -> list[Node]:
    """Every node whose byte range is exactly [start, end) (a call inside an expression statement shares it)."""
    node = root.descendant_for_byte_range(start, end)
    chain = []
    while node is not None and node.start_byte == start and node.end_byte == end:
        chain.append(node)
        node = node.parent
    return chain


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda fixture: fixture.language)
def test_every_candidate_is_exactly_a_node_or_its_named_part(fixture: Fixture) -> None:
    source, spans = _spans(fixture)
    parser = parser_for(fixture.language)
    assert parser is not None
    root = parser.parse(source).root_node
    for category in ("function", "class", "block", "expression"):
        for start, end, node_type in spans[category]:
            assert node_type in {node.type for node in _node_with_range(root, start, end)}, (category, node_type)
    for start, end, node_type in spans["body"]:
        function_type = node_type.removesuffix("/body")
        bodies = [node.parent for node in _node_with_range(root, start, end) if node.parent is not None]
        assert any(parent.type == function_type and parent.child_by_field_name("body") for parent in bodies)
    for start, end, node_type in spans["signature"]:
        function = root.descendant_for_byte_range(start, start + 1)
        while function is not None and not (
            function.type == node_type.removesuffix("/signature") and function.start_byte == start
        ):
            function = function.parent
        assert function is not None
        body = function.child_by_field_name("body")
        assert body is not None and end <= body.start_byte
    for start, end, node_type in spans["statement"]:
        if node_type != "statement_run":
            assert node_type in {node.type for node in _node_with_range(root, start, end)}
            continue
        first = root.descendant_for_byte_range(start, start)
        while first is not None and first.parent is not None and first.parent.start_byte == start:
            first = first.parent
        assert first is not None and first.start_byte == start and first.end_byte < end
        siblings = [sibling for sibling in first.parent.named_children if start <= sibling.start_byte < end]
        assert 2 <= len(siblings) <= 3 and siblings[-1].end_byte == end
    for start, end, node_type in spans["arguments"]:
        outer = [node.type for node in _node_with_range(root, start - 1, end + 1)]
        assert node_type in outer or node_type in {node.type for node in _node_with_range(root, start, end)}
    for start, end, _ in spans["line"]:
        assert start == 0 or source[start - 1 : start] == b"\n"
        assert source[end : end + 1] in (b"\n", b"\r", b"") and b"\n" not in source[start:end]
    for start, end, _ in spans["empty"]:
        assert start == end and source[start - 1 : start] == b"\n"


@pytest.mark.parametrize("language", sorted(NODE_TYPES))
def test_node_type_tables_name_real_node_types(language: str) -> None:
    grammar = language_for(language)
    assert grammar is not None
    named = {
        grammar.node_kind_for_id(kind)
        for kind in range(grammar.node_kind_count)
        if grammar.node_kind_is_named(kind) and grammar.node_kind_is_visible(kind)
    }
    table = NODE_TYPES[language]
    for group in fields(table):
        value = getattr(table, group.name)
        if isinstance(value, frozenset):
            assert value <= named, (group.name, sorted(value - named))


def test_parsers_are_cached_and_unknown_languages_have_none() -> None:
    assert parser_for("python") is parser_for("python")
    assert parser_for("cobol") is None and parser_for("kotlin") is None
    assert find_spans(b"x = 1\n", "cobol") is None


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda fixture: fixture.language)
def test_samples_reconstruct_and_carry_the_node_type(fixture: Fixture) -> None:
    doc = Document("src/shape", fixture.language, fixture.source)
    categories = set()
    for seed in range(40):
        result = structured_fim(doc, random.Random(seed), spm=seed % 2 == 0)
        assert result.ok and result.sample is not None and result.reason is None
        sample = result.sample
        assert sample.prefix + sample.middle + sample.suffix == fixture.source
        assert sample.mode == "fim" and sample.spm is (seed % 2 == 0)
        assert sample.node_type is not None and sample.node_type.startswith(fixture.language + ":")
        categories.add(result.category)
    assert len(categories) >= 5


def test_non_ascii_before_the_span_keeps_the_middle_exact() -> None:
    function = 'def 函数(参数):\n    return 参数 + "✓🎉"'
    text = '# 中文注释 🎉🎉 naïve\ns = "表情 😀"\n' + function + "\n"
    doc = Document("u.py", "python", text)
    source, spans = text.encode(), find_spans(text.encode(), "python")
    assert spans is not None
    assert _texts(source, spans, "function") == [function]
    assert _texts(source, spans, "signature") == ["def 函数(参数):"]
    assert 'return 参数 + "✓🎉"' in _texts(source, spans, "statement")
    result = structured_fim(doc, random.Random(0), spm=False, weights={"function": 1.0})
    assert result.sample is not None
    assert result.sample.middle == function
    assert result.sample.prefix == '# 中文注释 🎉🎉 naïve\ns = "表情 😀"\n' and result.sample.suffix == "\n"
    assert result.sample.node_type == "python:function_definition"


def test_crlf_and_tabs() -> None:
    text = "def f(a):\r\n\tif a:\r\n\t\treturn 1\r\n\treturn 2\r\n"
    source, spans = text.encode(), find_spans(text.encode(), "python")
    assert spans is not None and not spans.has_error
    assert _texts(source, spans, "line") == ["\tif a:", "\t\treturn 1", "\treturn 2"]
    doc = Document("f.py", "python", text)
    for seed in range(30):
        sample = structured_fim(doc, random.Random(seed), spm=False).sample
        assert sample is not None and sample.prefix + sample.middle + sample.suffix == text


def test_fallback_reasons() -> None:
    rng = random.Random(0)
    broken = structured_fim(Document("b.py", "python", "def f(:\n    return )\n"), rng, spm=False)
    assert (broken.reason, broken.sample) == ("parse_error", None)
    spans = find_spans(b"def f(:\n", "python")
    assert spans is not None and spans.has_error
    assert structured_fim(Document("a.cob", "cobol", "x"), rng, spm=False).reason == "no_grammar"
    assert structured_fim(Document("e.py", "python", ""), rng, spm=False).reason == "no_candidates"
    assert structured_fim(Document("n.py", "python", "x = 1\n"), rng, spm=False, weights={"class": 1}).reason == (
        "no_candidates"
    )


def test_deep_nesting_needs_no_recursion() -> None:
    text = "x = " + "(" * 2000 + "1" + ")" * 2000 + "\n"
    spans = find_spans(text.encode(), "python")
    assert spans is not None and not spans.has_error
    assert len(spans["statement"]) == 1


def test_a_zero_weight_category_is_never_chosen() -> None:
    doc = Document("shape.py", "python", PYTHON.source)
    weights = {**DEFAULT_CATEGORY_WEIGHTS, "statement": 0.0, "function": 0.0}
    chosen = {structured_fim(doc, random.Random(seed), spm=False, weights=weights).category for seed in range(300)}
    assert "statement" not in chosen and "function" not in chosen
    assert chosen == set(CATEGORIES) - {"statement", "function"}
    only = {structured_fim(doc, random.Random(seed), spm=False, weights={"line": 2}).category for seed in range(50)}
    assert only == {"line"}


def test_deterministic_for_a_seed() -> None:
    doc = Document("shape.ts", "typescript", TYPESCRIPT.source)
    first = [structured_fim(doc, random.Random(seed), spm=False).sample for seed in range(20)]
    again = [structured_fim(doc, random.Random(seed), spm=False).sample for seed in range(20)]
    assert first == again
    assert len({sample.middle for sample in first if sample is not None}) > 3


@pytest.mark.parametrize("weights", [{"functions": 1.0}, {"function": -1.0}, {"function": float("nan")}])
def test_bad_weights_are_user_errors(weights: dict[str, float]) -> None:
    with pytest.raises(UserError):
        structured_fim(Document("a.py", "python", "x = 1\n"), random.Random(0), spm=False, weights=weights)


# --- windows -------------------------------------------------------------------------------------------------------


@given(
    text=st.text(alphabet=st.sampled_from("ab \n\t中🎉"), max_size=300),
    data=st.data(),
    max_chars=st.integers(min_value=0, max_value=200),
)
def test_window_holds_the_middle_and_fits(text: str, data: st.DataObject, max_chars: int) -> None:
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, len(text)))
    window = window_for_span(text, start, end, max_chars)
    if end - start > max_chars:
        assert window is None
        return
    assert window is not None
    low, high = window
    assert 0 <= low <= start <= end <= high <= len(text)
    assert high - low <= max_chars


def test_window_cuts_at_line_boundaries_when_it_can() -> None:
    text = "".join(f"line {i:02d}\n" for i in range(20))  # 8 characters a line
    start = text.index("line 10")
    end = start + len("line 10")
    low, high = window_for_span(text, start, end, 40) or (-1, -1)
    assert (low, high) == (text.index("line 08"), text.index("line 13"))  # lines 08-12, 40 characters
    assert window_for_span(text, 0, len(text), 40) is None
    long_lines = "x" * 100 + "\nmid\n" + "y" * 100
    middle = long_lines.index("mid")
    assert window_for_span(long_lines, middle, middle + 3, 21) == (middle - 9, middle + 12)  # no line end in reach
    assert window_for_span(text, 0, 4, 1000) == (0, len(text))


def test_structured_fim_with_max_chars_keeps_a_window_and_skips_long_middles() -> None:
    big = "def big():\n" + "".join(f"    v{i} = {i}\n" for i in range(200))
    text = "import os\n\n" + big + "\n\ndef small():\n    return 1\n"
    doc = Document("long.py", "python", text)
    for seed in range(60):
        result = structured_fim(doc, random.Random(seed), spm=False, max_chars=200)
        sample = result.sample
        assert sample is not None
        window = sample.prefix + sample.middle + sample.suffix
        assert len(window) <= 200 and window in text
        assert len(sample.middle) <= 200
    too_long = structured_fim(doc, random.Random(0), spm=False, weights={"class": 1, "function": 1}, max_chars=10)
    assert too_long.reason == "no_candidates"


# --- properties ----------------------------------------------------------------------------------------------------

_NAMES = st.sampled_from(["x", "value", "名前", "ñandú", "données", "_tmp", "Größe", "counter2"])
_STRINGS = st.sampled_from(['"héllo"', "'🎉 emoji'", '"中文"', '"tab\\t"', "''", '"a\\nb"'])
_ATOMS = st.one_of(_NAMES, _STRINGS, st.integers(-99, 999).map(str))


@st.composite
def _expression(draw: st.DrawFn) -> str:
    shape = draw(st.sampled_from(["atom", "binary", "call", "cond", "list"]))
    a, b = draw(_ATOMS), draw(_ATOMS)
    return {
        "atom": a,
        "binary": f"{a} {draw(st.sampled_from(['+', '*', '==', 'and', '<']))} {b}",
        "call": f"{draw(_NAMES)}({a}, {b})",
        "cond": f"{a} if {b} else None",
        "list": f"[{a}, {b}]",
    }[shape]


@st.composite
def _block(draw: st.DrawFn, depth: int, indent: str) -> list[str]:
    """Lines of a valid Python block: simple statements and nested compound ones."""
    lines: list[str] = []
    for index in range(draw(st.integers(1, 4))):
        comment = ["comment"] if index else []  # a block of only a comment is not Python
        compound = ["if", "for", "def", "class"] if depth else []
        kind = draw(st.sampled_from(["assign", "call", "return", "pass", *comment, *compound]))
        if kind in ("if", "for", "def", "class"):
            header = {
                "if": f"if {draw(_expression())}:",
                "for": f"for {draw(_NAMES)} in {draw(_expression())}:",
                "def": f"def {draw(_NAMES)}({draw(_NAMES)}):",
                "class": f"class {draw(_NAMES)}:",
            }[kind]
            lines.append(indent + header)
            lines.extend(draw(_block(depth - 1, indent + draw(st.sampled_from(["    ", "\t", "  "])))))
        elif kind == "comment":
            lines.append(indent + "# коммент 🎉")
        else:
            lines.append(
                indent
                + {
                    "assign": f"{draw(_NAMES)} = {draw(_expression())}",
                    "call": f"{draw(_NAMES)}({draw(_expression())})",
                    "return": f"return {draw(_expression())}",
                    "pass": "pass",
                }[kind]
            )
    return lines


@st.composite
def python_sources(draw: st.DrawFn) -> str:
    lines = draw(_block(3, ""))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    return newline.join(lines) + draw(st.sampled_from(["", newline]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=python_sources(), seed=st.integers(), spm=st.booleans())
def test_generated_python_always_reconstructs(text: str, seed: int, spm: bool) -> None:
    doc = Document("gen.py", "python", text)
    result = structured_fim(doc, random.Random(seed), spm=spm)
    assert result.reason is None, (result.reason, text)
    sample = result.sample
    assert sample is not None
    assert sample.prefix + sample.middle + sample.suffix == text
    windowed = structured_fim(doc, random.Random(seed), spm=spm, max_chars=60)
    if windowed.sample is not None:
        window = windowed.sample.prefix + windowed.sample.middle + windowed.sample.suffix
        assert window == text if len(text) <= 60 else (window in text and len(window) <= 60)


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=200), language=st.sampled_from(sorted(GRAMMAR_MODULES) + ["cobol"]), seed=st.integers())
@example(text="\udcff = 1", language="python", seed=0)
@example(text="def f(:", language="python", seed=0)
def test_arbitrary_text_falls_back_cleanly(text: str, language: str, seed: int) -> None:
    result = structured_fim(Document("any", language, text), random.Random(seed), spm=False)
    if result.sample is None:
        assert result.reason in ("no_grammar", "parse_error", "no_candidates")
    else:
        assert result.sample.prefix + result.sample.middle + result.sample.suffix == text
