"""The held-out FIM benchmark: completion items cut from files training did not see, in aiXcoder's categories.

Categories (after aiXcoder's benchmark): method signature, method body, single line, method with comment (the
comment or docstring stays in the prompt), empty (nothing belongs at the cursor), method body top/middle/bottom
(the first, middle or last third of a body's statements) and if/for/while/try/switch blocks. Spans come from the
same tree-sitter walk as structured FIM training (`finetune.data.fim.structured.find_spans`). Each item records how its
completion is truncated; an item whose own reference that rule would change is left out (and counted), so a
perfect completion always scores 1.0.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from finetune.data.fim.structured import find_spans, window_for_span
from finetune.data.types import Document
from finetune.errors import UserError
from finetune.evaluate.truncate import SYNTAX, tokens, truncate

CATEGORIES: tuple[str, ...] = (
    "method_signature",
    "method_body",
    "single_line",
    "method_with_comment",
    "empty",
    "body_top",
    "body_middle",
    "body_bottom",
    "if_block",
    "for_block",
    "while_block",
    "try_block",
    "switch_block",
)

# Whole block statements by tree-sitter node type (clauses such as `case`/`else` arms are not items).
BLOCK_KINDS: dict[str, str] = {
    **dict.fromkeys(["if_statement", "if_expression", "if", "unless"], "if_block"),
    **dict.fromkeys(
        [
            "for_statement", "for_in_statement", "enhanced_for_statement", "foreach_statement", "for_range_loop",
            "c_style_for_statement", "for_expression", "for",
        ],
        "for_block",
    ),
    **dict.fromkeys(
        ["while_statement", "do_statement", "while_expression", "loop_expression", "while", "until"], "while_block"
    ),
    **dict.fromkeys(["try_statement", "try_with_resources_statement", "begin"], "try_block"),
    **dict.fromkeys(
        [
            "switch_statement", "switch_expression", "expression_switch_statement", "type_switch_statement",
            "select_statement", "match_statement", "match_expression", "case", "case_match",
        ],
        "switch_block",
    ),
}  # fmt: skip
_SHELL_SWITCH = "case_statement"  # shell's whole `case ... esac`; in C and PHP the same name is one arm
_ANONYMOUS_FUNCTIONS = frozenset(
    ["lambda_expression", "closure_expression", "arrow_function", "func_literal", "function_expression", "anonymous_function", "anonymous_method_expression", "generator_function"]
)
_COMMENT_STARTS = ("#", "//", "/*", "*", "--", "<!--")


@dataclass(frozen=True)
class EvalItem:
    """One completion task: fill `middle` between `prefix` and `suffix`; `mode` is its truncation rule."""

    id: str
    path: str
    language: str
    category: str
    prefix: str
    middle: str
    suffix: str
    mode: str
    node_type: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Candidate:
    category: str
    start: int
    end: int
    mode: str
    node_type: str


def _decode(source: bytes, start: int, end: int) -> str | None:
    try:
        return source[start:end].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _previous_line(source: bytes, start: int) -> bytes:
    """The last non-blank line that ends before the line holding `start`."""
    line_start = source.rfind(b"\n", 0, start) + 1
    if source[line_start:start].strip():
        return b""  # something precedes the node on its own line
    for line in reversed(source[: max(line_start - 1, 0)].split(b"\n")):
        if line.strip():
            return line.strip()
    return b""


def _docstring_end(source: bytes, body_start: int, body_end: int) -> int | None:
    """Where the code after a Python body's leading docstring starts; None when the body has no docstring."""
    text = _decode(source, body_start, body_end)
    if text is None or not text.lstrip().startswith(('"', "'")):
        return None
    first = next((t for t in tokens(text, SYNTAX["python"]) if t.text != "\n"), None)
    if first is None:
        return None
    return body_start + len(text[: first.pos].encode("utf-8"))


def _candidates(source: bytes, language: str) -> list[_Candidate]:
    """Every benchmark candidate of one file, by category."""
    spans = find_spans(source, language)
    if spans is None or spans.has_error:
        return []
    named = [(s, e, t) for s, e, t in spans["signature"] if t.split("/")[0] not in _ANONYMOUS_FUNCTIONS]
    out = [_Candidate("method_signature", s, e, "header", t) for s, e, t in named]
    out += [_Candidate("single_line", s, e, "line", t) for s, e, t in spans["line"]]
    out += [_Candidate("empty", s, e, "unit", t) for s, e, t in spans["empty"]]
    for start, end, kind in spans["block"]:
        category = "switch_block" if kind == _SHELL_SWITCH and language == "shell" else BLOCK_KINDS.get(kind)
        if category:
            out.append(_Candidate(category, start, end, "unit", kind))
    for start, end, kind in spans["body"]:
        if kind.split("/")[0] in _ANONYMOUS_FUNCTIONS:
            continue
        mode = "unit" if source[start : start + 1] == b"{" else "statements"
        out.append(_Candidate("method_body", start, end, mode, kind))
        if language == "python":
            after = _docstring_end(source, start, end)
            if after is not None and after < end:
                out.append(_Candidate("method_with_comment", after, end, "statements", kind))
        out += _body_thirds(spans, start, end)
    for start, end, kind in spans["function"]:
        if kind in _ANONYMOUS_FUNCTIONS:
            continue
        previous = _previous_line(source, start).decode("utf-8", "replace")
        if previous.startswith(_COMMENT_STARTS) or previous.endswith("*/"):
            out.append(_Candidate("method_with_comment", start, end, "unit", kind))
    return out


def _body_thirds(spans, body_start: int, body_end: int) -> list[_Candidate]:
    """The top, middle and bottom third of a body's outermost statements, as three statement runs."""
    inner = [
        (s, e)
        for category in ("statement", "block", "function", "class")
        for s, e, t in spans[category]
        if body_start <= s and e <= body_end and (s, e) != (body_start, body_end) and t != "statement_run"
    ]
    inner = sorted(set(inner), key=lambda span: (span[0], -span[1]))
    outer: list[tuple[int, int]] = []
    for start, end in inner:
        if not outer or start >= outer[-1][1]:
            outer.append((start, end))
    if len(outer) < 3:
        return []
    n = len(outer)
    cuts = [0, round(n / 3), round(2 * n / 3), n]
    names = ("body_top", "body_middle", "body_bottom")
    return [
        _Candidate(names[i], outer[cuts[i]][0], outer[cuts[i + 1] - 1][1], "statements", "statements")
        for i in range(3)
        if cuts[i + 1] > cuts[i]
    ]


def _item(doc: Document, source: bytes, cand: _Candidate, max_context_chars: int) -> EvalItem | None:
    prefix = _decode(source, 0, cand.start)
    middle = _decode(source, cand.start, cand.end)
    suffix = _decode(source, cand.end, len(source))
    if prefix is None or middle is None or suffix is None:
        return None
    window = window_for_span(doc.text, len(prefix), len(prefix) + len(middle), max_context_chars)
    if window is None:
        return None
    prefix, suffix = doc.text[window[0] : len(prefix)], doc.text[len(prefix) + len(middle) : window[1]]
    line = doc.text.count("\n", 0, window[0]) + prefix.count("\n") + 1
    return EvalItem(
        id=f"{doc.path}:{line}:{cand.category}",
        path=doc.path,
        language=doc.language,
        category=cand.category,
        prefix=prefix,
        middle=middle,
        suffix=suffix,
        mode=cand.mode,
        node_type=cand.node_type,
    )


def build_items(
    documents: Iterable[Document],
    *,
    per_category: int = 20,
    seed: int = 0,
    max_middle_chars: int = 1200,
    max_context_chars: int = 4000,
    categories: Iterable[str] = CATEGORIES,
    stats: Counter[str] | None = None,
) -> list[EvalItem]:
    """Up to `per_category` items per category, spread over the files round-robin, deterministic for `seed`."""
    wanted = set(categories)
    unknown = sorted(wanted - set(CATEGORIES))
    if unknown:
        raise UserError(f"unknown eval categories {unknown}: choose among {', '.join(CATEGORIES)}")
    stats = stats if stats is not None else Counter()
    pools: dict[str, dict[str, list[tuple[Document, bytes, _Candidate]]]] = defaultdict(lambda: defaultdict(list))
    for doc in documents:
        source = doc.text.encode("utf-8", "surrogatepass")
        found = _candidates(source, doc.language)
        stats["files_with_items" if found else "files_without_items"] += 1
        for cand in found:
            if cand.category not in wanted:
                continue
            size = cand.end - cand.start
            if size > max_middle_chars * 4 or (cand.category != "empty" and not source[cand.start : cand.end].strip()):
                continue
            pools[cand.category][doc.path].append((doc, source, cand))
    rng = random.Random(seed)
    items: list[EvalItem] = []
    for category in CATEGORIES:
        by_file = pools.get(category, {})
        files = sorted(by_file)
        rng.shuffle(files)
        for path in files:
            rng.shuffle(by_file[path])
        taken = 0
        for round_ in range(max((len(v) for v in by_file.values()), default=0)):
            for path in files:
                if taken >= per_category or round_ >= len(by_file[path]):
                    continue
                doc, source, cand = by_file[path][round_]
                item = _item(doc, source, cand, max_context_chars)
                if item is None or len(item.middle) > max_middle_chars:
                    stats["too_long"] += 1
                    continue
                if truncate(item.middle, item.language, item.mode, item.prefix) != item.middle:
                    stats["truncation_would_change_reference"] += 1
                    continue
                items.append(item)
                taken += 1
        stats[f"items_{category}"] = taken
    return items
