"""Structured fill-in-the-middle: the middle is one complete syntax unit, found with tree-sitter (aiXcoder's SFIM).

Random character cuts teach a model to finish half a token; structured cuts teach it to write what a programmer
writes: a whole function, a signature, a body, a loop, a statement, a line, an expression, call arguments, or
nothing at all. The file is parsed once; one iterative walk collects candidate spans per category; the sample
picks a category by weight among those that have candidates, then one candidate uniformly.

Tree-sitter offsets are UTF-8 byte offsets, so spans are byte ranges of the encoded text; each part is decoded
on its own and `prefix + middle + suffix` is the document text exactly (non-ASCII, CRLF and tabs included).
"""

from __future__ import annotations

import math
import random
from array import array
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

from tree_sitter import Node, Tree

from finetune.data.fim.grammars import language_for, parser_for
from finetune.data.types import Document, Sample
from finetune.errors import UserError

CATEGORIES: tuple[str, ...] = (
    "function",
    "signature",
    "body",
    "class",
    "block",
    "statement",
    "line",
    "expression",
    "arguments",
    "empty",
)

# Category weights (recipe keys); function/body/block/statement dominate, as in aiXcoder's node mix.
DEFAULT_CATEGORY_WEIGHTS: dict[str, float] = {
    "function": 0.15,
    "signature": 0.05,
    "body": 0.15,
    "class": 0.05,
    "block": 0.15,
    "statement": 0.15,
    "line": 0.10,
    "expression": 0.10,
    "arguments": 0.05,
    "empty": 0.05,
}

FallbackReason = Literal["no_grammar", "parse_error", "no_candidates"]
Span = tuple[int, int, str]  # (start_byte, end_byte, node type)

MIN_EXPRESSION_CHARS = 3
MAX_RUN = 3  # statement runs: 1..3 contiguous siblings
_PICK_TRIES = 8  # random picks before scanning a category for a candidate that fits


@dataclass(frozen=True)
class NodeTypes:
    """Tree-sitter node type names per category for one grammar.

    `containers` hold statements as their direct children (module, block, compound_statement, ...): statements,
    statement runs and empty positions are taken among a container's children only, so that `i++` in a for-loop
    header is not a statement. `bodies` are the node types a function body must have to count as a `body` (an
    arrow function's expression body does not). `opaque` nodes (strings, comments) are not descended into.
    """

    function: frozenset[str]
    klass: frozenset[str]
    block: frozenset[str]
    statement: frozenset[str]
    expression: frozenset[str]
    arguments: frozenset[str]
    containers: frozenset[str]
    bodies: frozenset[str]
    opaque: frozenset[str] = frozenset()
    class_needs_body: bool = False  # C/C++ `struct P *p` names a type; only `struct P { ... }` defines one


def _types(text: str) -> frozenset[str]:
    return frozenset(text.split())


_C_EXPRESSIONS = "binary_expression call_expression conditional_expression unary_expression cast_expression subscript_expression sizeof_expression"
_C_BLOCKS = "if_statement for_statement while_statement do_statement switch_statement case_statement"
_C_STATEMENTS = "expression_statement declaration return_statement break_statement continue_statement goto_statement type_definition"
_C_CONTAINERS = "translation_unit compound_statement case_statement preproc_if preproc_ifdef preproc_else preproc_elif"

_JS_FUNCTIONS = "function_declaration function_expression arrow_function method_definition generator_function_declaration generator_function"
_JS_BLOCKS = "if_statement for_statement for_in_statement while_statement do_statement try_statement switch_statement switch_case switch_default"
_JS_STATEMENTS = "expression_statement lexical_declaration variable_declaration return_statement break_statement continue_statement throw_statement import_statement debugger_statement"
_JS_EXPRESSIONS = "binary_expression call_expression ternary_expression arrow_function unary_expression new_expression await_expression subscript_expression"
_JSX_EXPRESSIONS = "jsx_element jsx_self_closing_element"
_JS_CONTAINERS = "program statement_block switch_case switch_default"
_TS_CLASSES = "class_declaration abstract_class_declaration class interface_declaration enum_declaration"
_TS_EXPRESSIONS = "as_expression satisfies_expression"


def _javascript(*, typescript: bool, jsx: bool) -> NodeTypes:
    """JavaScript and its dialects share one table: TypeScript adds declarations, JSX adds elements."""
    expressions = (
        _JS_EXPRESSIONS + (" " + _TS_EXPRESSIONS if typescript else "") + (" " + _JSX_EXPRESSIONS if jsx else "")
    )
    return NodeTypes(
        function=_types(_JS_FUNCTIONS),
        klass=_types(_TS_CLASSES if typescript else "class_declaration class"),
        block=_types(_JS_BLOCKS),
        statement=_types(_JS_STATEMENTS + (" type_alias_declaration" if typescript else "")),
        expression=_types(expressions),
        arguments=_types("arguments"),
        containers=_types(_JS_CONTAINERS),
        bodies=_types("statement_block"),
        opaque=_types("string comment regex"),
    )


NODE_TYPES: dict[str, NodeTypes] = {
    "python": NodeTypes(
        function=_types("function_definition"),
        klass=_types("class_definition"),
        block=_types(
            "if_statement for_statement while_statement try_statement with_statement match_statement case_clause"
        ),
        statement=_types(
            "expression_statement return_statement pass_statement break_statement continue_statement raise_statement "
            "assert_statement import_statement import_from_statement future_import_statement global_statement "
            "nonlocal_statement delete_statement type_alias_statement print_statement exec_statement"
        ),
        expression=_types(
            "binary_operator boolean_operator comparison_operator not_operator unary_operator call "
            "conditional_expression lambda list_comprehension dictionary_comprehension set_comprehension "
            "generator_expression await subscript"
        ),
        arguments=_types("argument_list"),
        containers=_types("module block"),
        bodies=_types("block"),
        opaque=_types("string comment"),
    ),
    "java": NodeTypes(
        function=_types("method_declaration constructor_declaration compact_constructor_declaration lambda_expression"),
        klass=_types(
            "class_declaration interface_declaration enum_declaration record_declaration annotation_type_declaration"
        ),
        block=_types(
            "if_statement for_statement enhanced_for_statement while_statement do_statement try_statement "
            "try_with_resources_statement switch_expression switch_block_statement_group switch_rule synchronized_statement"
        ),
        statement=_types(
            "expression_statement local_variable_declaration return_statement break_statement continue_statement "
            "throw_statement yield_statement assert_statement explicit_constructor_invocation import_declaration "
            "package_declaration"
        ),
        expression=_types(
            "binary_expression method_invocation ternary_expression lambda_expression unary_expression "
            "object_creation_expression array_access cast_expression instanceof_expression"
        ),
        arguments=_types("argument_list"),
        containers=_types("program block constructor_body switch_block_statement_group"),
        bodies=_types("block constructor_body"),
        opaque=_types("string_literal line_comment block_comment"),
    ),
    "javascript": _javascript(typescript=False, jsx=True),
    "jsx": _javascript(typescript=False, jsx=True),
    "typescript": _javascript(typescript=True, jsx=False),
    "tsx": _javascript(typescript=True, jsx=True),
    "c": NodeTypes(
        function=_types("function_definition"),
        klass=_types("struct_specifier union_specifier enum_specifier"),
        block=_types(_C_BLOCKS),
        statement=_types(_C_STATEMENTS),
        expression=_types(_C_EXPRESSIONS),
        arguments=_types("argument_list"),
        containers=_types(_C_CONTAINERS),
        bodies=_types("compound_statement"),
        opaque=_types("string_literal char_literal comment"),
        class_needs_body=True,
    ),
    "c++": NodeTypes(
        function=_types("function_definition lambda_expression"),
        klass=_types("class_specifier struct_specifier union_specifier enum_specifier"),
        block=_types(_C_BLOCKS + " for_range_loop try_statement"),
        statement=_types(_C_STATEMENTS + " alias_declaration using_declaration throw_statement co_return_statement"),
        expression=_types(_C_EXPRESSIONS + " new_expression delete_expression lambda_expression"),
        arguments=_types("argument_list"),
        containers=_types(_C_CONTAINERS + " declaration_list"),
        bodies=_types("compound_statement"),
        opaque=_types("string_literal raw_string_literal char_literal comment"),
        class_needs_body=True,
    ),
    "c#": NodeTypes(
        function=_types(
            "method_declaration constructor_declaration destructor_declaration local_function_statement "
            "operator_declaration conversion_operator_declaration lambda_expression anonymous_method_expression"
        ),
        klass=_types("class_declaration struct_declaration interface_declaration enum_declaration record_declaration"),
        block=_types(
            "if_statement for_statement foreach_statement while_statement do_statement switch_statement switch_section "
            "try_statement using_statement lock_statement checked_statement fixed_statement unsafe_statement"
        ),
        statement=_types(
            "expression_statement local_declaration_statement return_statement break_statement continue_statement "
            "throw_statement yield_statement goto_statement using_directive global_statement"
        ),
        expression=_types(
            "binary_expression invocation_expression conditional_expression lambda_expression prefix_unary_expression "
            "object_creation_expression element_access_expression cast_expression await_expression switch_expression "
            "is_pattern_expression"
        ),
        arguments=_types("argument_list"),
        containers=_types("compilation_unit block switch_section"),
        bodies=_types("block arrow_expression_clause"),
        opaque=_types("string_literal verbatim_string_literal raw_string_literal comment"),
    ),
    "go": NodeTypes(
        function=_types("function_declaration method_declaration func_literal"),
        klass=_types("type_declaration"),
        block=_types(
            "if_statement for_statement expression_switch_statement type_switch_statement select_statement "
            "expression_case default_case type_case communication_case"
        ),
        statement=_types(
            "expression_statement short_var_declaration assignment_statement inc_statement dec_statement "
            "return_statement go_statement defer_statement var_declaration const_declaration break_statement "
            "continue_statement goto_statement send_statement fallthrough_statement import_declaration"
        ),
        expression=_types(
            "binary_expression unary_expression call_expression composite_literal index_expression slice_expression "
            "type_assertion_expression func_literal"
        ),
        arguments=_types("argument_list"),
        containers=_types("source_file statement_list"),
        bodies=_types("block"),
        opaque=_types("interpreted_string_literal raw_string_literal comment"),
    ),
    "rust": NodeTypes(
        function=_types("function_item closure_expression"),
        klass=_types("struct_item enum_item trait_item impl_item union_item"),
        block=_types("if_expression for_expression while_expression loop_expression match_expression match_arm"),
        statement=_types("let_declaration expression_statement use_declaration const_item static_item"),
        expression=_types(
            "binary_expression call_expression unary_expression closure_expression index_expression range_expression "
            "macro_invocation try_expression await_expression reference_expression struct_expression type_cast_expression"
        ),
        arguments=_types("arguments"),
        containers=_types("source_file block"),
        bodies=_types("block"),
        opaque=_types("string_literal raw_string_literal line_comment block_comment token_tree"),
    ),
    "php": NodeTypes(
        function=_types("function_definition method_declaration anonymous_function arrow_function"),
        klass=_types("class_declaration interface_declaration trait_declaration enum_declaration"),
        block=_types(
            "if_statement for_statement foreach_statement while_statement do_statement switch_statement case_statement "
            "default_statement try_statement match_expression"
        ),
        statement=_types(
            "expression_statement return_statement echo_statement break_statement continue_statement unset_statement "
            "global_declaration namespace_use_declaration const_declaration"
        ),
        expression=_types(
            "binary_expression function_call_expression member_call_expression scoped_call_expression "
            "conditional_expression unary_op_expression object_creation_expression arrow_function subscript_expression"
        ),
        arguments=_types("arguments"),
        containers=_types("program compound_statement case_statement default_statement colon_block"),
        bodies=_types("compound_statement"),
        opaque=_types("string encapsed_string heredoc nowdoc comment text"),
    ),
    "ruby": NodeTypes(
        function=_types("method singleton_method"),
        klass=_types("class module singleton_class"),
        block=_types("if unless while until for case case_match begin when in_clause"),
        statement=_types(
            "assignment operator_assignment call return yield break next redo retry if_modifier unless_modifier "
            "while_modifier until_modifier rescue_modifier alias undef"
        ),
        expression=_types("binary call conditional unary lambda element_reference range"),
        arguments=_types("argument_list"),
        containers=_types("program body_statement then else do block_body begin ensure"),
        bodies=_types("body_statement"),
        opaque=_types("string comment heredoc_body regex"),
    ),
    "shell": NodeTypes(
        function=_types("function_definition"),
        klass=frozenset(),
        block=_types("if_statement for_statement c_style_for_statement while_statement case_statement case_item"),
        statement=_types(
            "command variable_assignment declaration_command pipeline list redirected_statement unset_command "
            "negated_command test_command"
        ),
        expression=_types("binary_expression ternary_expression command_substitution arithmetic_expansion expansion"),
        arguments=frozenset(),
        containers=_types(
            "program compound_statement do_group if_statement elif_clause else_clause case_item subshell"
        ),
        bodies=_types("compound_statement subshell"),
        opaque=_types("comment raw_string heredoc_body"),
    ),
}

# Flag bits per node kind id: one array lookup per node in the walk instead of set lookups on type strings.
_FUNCTION, _CLASS, _BLOCK, _STATEMENT, _EXPRESSION, _ARGUMENTS, _CONTAINER, _BODY, _OPAQUE = (1 << i for i in range(9))
_VISIT = _FUNCTION | _CLASS | _BLOCK | _EXPRESSION | _ARGUMENTS | _CONTAINER
_MAX_KIND_ID = 1 << 16  # kind ids are uint16 (ERROR is 65535): an array of this size needs no bounds check


@dataclass(frozen=True)
class _Table:
    """One grammar's node types compiled to flags by kind id, and names by kind id."""

    flags: array
    names: tuple[str, ...]
    class_needs_body: bool


def _flags_for(name: str, types: NodeTypes) -> int:
    groups = (
        (types.function, _FUNCTION),
        (types.klass, _CLASS),
        (types.block, _BLOCK),
        (types.statement, _STATEMENT),
        (types.expression, _EXPRESSION),
        (types.arguments, _ARGUMENTS),
        (types.containers, _CONTAINER),
        (types.bodies, _BODY),
        (types.opaque, _OPAQUE),
    )
    return sum(bit for names, bit in groups if name in names)


@cache
def _table(language: str) -> _Table | None:
    """The flag table for a language id; None when there is no grammar or no node-type table for it."""
    grammar = language_for(language)
    types = NODE_TYPES.get(language)
    if grammar is None or types is None:
        return None
    flags = array("H", bytes(2 * _MAX_KIND_ID))
    names = []
    for kind_id in range(grammar.node_kind_count):
        name = grammar.node_kind_for_id(kind_id) or ""
        names.append(name)
        if grammar.node_kind_is_named(kind_id):
            flags[kind_id] = _flags_for(name, types)
    return _Table(flags=flags, names=tuple(names), class_needs_body=types.class_needs_body)


class Spans(dict[str, list[Span]]):
    """Candidate spans per category; `has_error` marks a file that did not parse cleanly.

    Such a file keeps the candidates of its error-free parts: one bad macro line should not cost a whole C file its
    structured samples.
    """

    def __init__(self, *, has_error: bool = False) -> None:
        super().__init__((category, []) for category in CATEGORIES)
        self.has_error = has_error


@dataclass
class _Collector:
    """Accumulates candidates during the walk; function bodies are kept to cut lines from afterwards."""

    source: bytes
    table: _Table
    spans: Spans
    bodies: list[tuple[int, int]] = field(default_factory=list)
    covered: int = 0  # end of the last body kept: bodies nested in it add no new lines

    def visit(self, node: Node, flags: int) -> None:
        name = self.table.names[node.kind_id]
        if flags & _FUNCTION:
            self._function(node, name)
        if flags & _CLASS and (not self.table.class_needs_body or node.child_by_field_name("body") is not None):
            self.spans["class"].append((node.start_byte, node.end_byte, name))
        if flags & _BLOCK:
            self.spans["block"].append((node.start_byte, node.end_byte, name))
        if flags & _EXPRESSION:
            self._expression(node, name)
        if flags & _ARGUMENTS:
            self._arguments(node, name)
        if flags & _CONTAINER:
            self._container(node)

    def _function(self, node: Node, name: str) -> None:
        """The whole function, its header up to the body, and the body; bodies are kept for `line`."""
        start, end = node.start_byte, node.end_byte
        self.spans["function"].append((start, end, name))
        body = node.child_by_field_name("body")
        if body is None:
            return
        header = body.prev_sibling
        while header is not None and (header.is_extra or header.type == ";"):  # Ruby's `def f; x; end`, comments
            header = header.prev_sibling
        if header is not None and header.end_byte > start:
            self.spans["signature"].append((start, header.end_byte, name + "/signature"))
        if self.table.flags[body.kind_id] & _BODY:
            self.spans["body"].append((body.start_byte, body.end_byte, name + "/body"))
        if body.start_byte >= self.covered:
            self.bodies.append((body.start_byte, body.end_byte))
            self.covered = body.end_byte

    def _expression(self, node: Node, name: str) -> None:
        start, end = node.start_byte, node.end_byte
        size = end - start  # bytes; a character is at most 4, so only short spans need counting
        if size >= 4 * MIN_EXPRESSION_CHARS or (
            size >= MIN_EXPRESSION_CHARS and _char_count(self.source, start, end) >= MIN_EXPRESSION_CHARS
        ):
            self.spans["expression"].append((start, end, name))

    def _arguments(self, node: Node, name: str) -> None:
        """What lies between the parentheses; Ruby's `puts x` has none, so the whole list is its contents."""
        start, end = node.start_byte, node.end_byte
        count = node.child_count
        if count >= 2:
            first, last = node.child(0), node.child(count - 1)
            if first is not None and last is not None and first.type == "(" and last.type == ")":
                start, end = first.end_byte, last.start_byte
        if end > start:
            self.spans["arguments"].append((start, end, name))

    def _container(self, node: Node) -> None:
        """Statements and 2-3 statement runs among the children; empty positions at line starts between them."""
        condition = node.child_by_field_name("condition")  # shell: `if cmd; then` has its condition as a child
        run: list[Node] = []
        previous_end = -1
        for child in node.named_children:
            if condition is not None and child == condition:
                previous_end = child.end_byte
                continue
            if previous_end >= 0:
                self._empty_before(previous_end, child.start_byte)
            previous_end = child.end_byte
            if self.table.flags[child.kind_id] & _STATEMENT:
                run.append(child)
                self._statement_runs(run)
            else:
                run = []

    def _statement_runs(self, run: list[Node]) -> None:
        """Candidates that end at the newest statement of a run: itself, and with its 1-2 predecessors."""
        last = run[-1]
        self.spans["statement"].append((last.start_byte, last.end_byte, self.table.names[last.kind_id]))
        for length in range(2, min(MAX_RUN, len(run)) + 1):
            self.spans["statement"].append((run[-length].start_byte, last.end_byte, "statement_run"))

    def _empty_before(self, previous_end: int, start: int) -> None:
        """A zero-length middle at the start of the line where a sibling begins, when that line holds only it."""
        newline = self.source.rfind(b"\n", previous_end, start)
        if newline < 0:
            return
        line_start = newline + 1
        if not self.source[line_start:start].strip():
            self.spans["empty"].append((line_start, line_start, "empty"))

    def lines(self) -> None:
        """Each whole non-blank line inside a function body, without its line break (`\\r\\n` or `\\n`)."""
        for body_start, body_end in self.bodies:
            self.spans["line"].extend(_body_lines(self.source, body_start, body_end))


def _body_lines(source: bytes, body_start: int, body_end: int) -> list[Span]:
    """Lines whose text (without indentation) lies inside the body: a `{` line that also holds the header is out."""
    lines: list[Span] = []
    line_start = source.rfind(b"\n", 0, body_start) + 1
    while line_start < body_end:
        newline = source.find(b"\n", line_start)
        line_end = newline if newline >= 0 else len(source)
        if line_end > line_start and source[line_end - 1] == 0x0D:  # CR of a CRLF
            line_end -= 1
        text = source[line_start:line_end]
        stripped = text.strip()
        if stripped:
            first = line_start + len(text) - len(text.lstrip())
            last = first + len(stripped)
            if first >= body_start and last <= body_end:
                lines.append((line_start, line_end, "line"))
        if newline < 0:
            break
        line_start = newline + 1
    return lines


def _char_count(source: bytes, start: int, end: int) -> int:
    """Characters in a UTF-8 byte range: every byte that is not a continuation byte starts one."""
    chunk = source[start:end]
    if chunk.isascii():
        return len(chunk)
    return sum(1 for byte in chunk if byte & 0xC0 != 0x80)


def _walk(tree: Tree, collector: _Collector) -> None:
    """Visit every node once, iteratively (deep nesting cannot hit Python's recursion limit).

    In a tree with errors, a node that holds an ERROR or MISSING node is not a candidate (its children may be) and
    ERROR subtrees are not entered: candidates come only from the parts that parsed cleanly.
    """
    flags_by_kind = collector.table.flags
    cursor = tree.walk()
    visit = collector.visit
    errors = tree.root_node.has_error
    while True:
        node = cursor.node
        flags = flags_by_kind[node.kind_id]
        if flags & _VISIT and not (errors and node.has_error):
            visit(node, flags)
        if not (flags & _OPAQUE or (errors and node.is_error)) and cursor.goto_first_child():
            continue
        while not cursor.goto_next_sibling():
            if not cursor.goto_parent():
                return


def find_spans(source: bytes, language: str) -> Spans | None:
    """Candidate (start_byte, end_byte, node_type) spans per category, from one parse and one walk.

    None when there is no grammar for `language`. A file that does not parse cleanly gets `has_error` and the
    candidates of its error-free parts (possibly none), so the caller can count it and fall back only when needed.
    """
    table = _table(language)
    parser = parser_for(language)
    if table is None or parser is None:
        return None
    tree = parser.parse(source)
    collector = _Collector(source=source, table=table, spans=Spans(has_error=tree.root_node.has_error))
    _walk(tree, collector)
    collector.lines()
    return collector.spans


def window_for_span(text: str, start_char: int, end_char: int, max_chars: int) -> tuple[int, int] | None:
    """A window [start, end) of at most `max_chars` characters that holds text[start_char:end_char] whole.

    Context is shared evenly before and after the middle (one side gets what the other cannot use at a file
    edge). Each edge moves inward to a line boundary when that keeps at least half of its side's context, so a
    window starts and ends on whole lines in ordinary code but still has context in minified one-line files.
    None when the middle alone is longer than `max_chars`: the caller picks another span or falls back.
    """
    spare = max_chars - (end_char - start_char)
    if spare < 0:
        return None
    before = min(start_char, spare // 2)
    after = min(len(text) - end_char, spare - before)
    before = min(start_char, spare - after)
    return _snap_start(text, start_char - before, start_char), _snap_end(text, end_char, end_char + after)


def _snap_start(text: str, lowest: int, middle_start: int) -> int:
    """The first line start in the nearer half of [lowest, middle_start], else `lowest` (a cut inside a line)."""
    if lowest == 0:
        return 0
    newline = text.find("\n", lowest - 1, lowest + (middle_start - lowest) // 2)
    return newline + 1 if newline >= 0 else lowest


def _snap_end(text: str, middle_end: int, highest: int) -> int:
    """The last line end (after a newline) in the farther half of [middle_end, highest], else `highest`."""
    if highest == len(text):
        return highest
    newline = text.rfind("\n", max(highest - (highest - middle_end) // 2 - 1, 0), highest)
    return newline + 1 if newline >= 0 else highest


@dataclass(frozen=True)
class StructuredResult:
    """A structured FIM sample, or why there is none (the caller falls back and counts `reason`)."""

    sample: Sample | None = None
    reason: FallbackReason | None = None
    category: str | None = None
    despite_errors: bool = False  # the file had parse errors; the middle comes from a part without them

    @property
    def ok(self) -> bool:
        return self.sample is not None


def check_weights(weights: Mapping[str, float]) -> None:
    """Recipe weights: known categories only, finite and non-negative, so a typo fails loudly."""
    unknown = sorted(set(weights) - set(CATEGORIES))
    if unknown:
        raise UserError(f"unknown structured FIM categories {unknown}: use some of {list(CATEGORIES)} in the recipe")
    for category, weight in weights.items():
        if not (isinstance(weight, int | float) and math.isfinite(weight) and weight >= 0):
            raise UserError(f"structured FIM weight for {category!r} must be a number >= 0, got {weight!r}")


def _choose_category(rng: random.Random, available: list[str], weights: Mapping[str, float]) -> str:
    """A category drawn in proportion to its weight (`available` all have weight > 0)."""
    total = sum(weights[category] for category in available)
    point = rng.random() * total
    for category in available:
        point -= weights[category]
        if point < 0:
            return category
    return available[-1]


def _is_char_start(source: bytes, offset: int) -> bool:
    """Whether a byte offset starts a character (a span inside an invalid sequence cannot be decoded apart)."""
    return offset >= len(source) or source[offset] & 0xC0 != 0x80


@dataclass(frozen=True)
class _Fit:
    """Whether a span can become a sample: on character boundaries, and short enough for a window if asked."""

    source: bytes
    max_chars: int | None

    def __call__(self, span: Span) -> bool:
        start, end, _ = span
        if not (_is_char_start(self.source, start) and _is_char_start(self.source, end)):
            return False
        if self.max_chars is None or end - start <= self.max_chars:
            return True
        return _char_count(self.source, start, end) <= self.max_chars


def _pick_span(rng: random.Random, spans: list[Span], fits: _Fit) -> Span | None:
    """A uniform pick among the spans that fit: a few random tries, then a scan (rarely needed)."""
    for _ in range(_PICK_TRIES):
        span = spans[rng.randrange(len(spans))]
        if fits(span):
            return span
    fitting = [span for span in spans if fits(span)]
    return fitting[rng.randrange(len(fitting))] if fitting else None


def _select(rng: random.Random, spans: Spans, weights: Mapping[str, float], fits: _Fit) -> tuple[str, Span] | None:
    """Category by weight among those with candidates, then a candidate uniformly; a category none fit drops out."""
    available = [category for category in CATEGORIES if spans.get(category) and weights.get(category, 0) > 0]
    while available:
        category = _choose_category(rng, available, weights)
        span = _pick_span(rng, spans[category], fits)
        if span is not None:
            return category, span
        available.remove(category)
    return None


def _parts(doc: Document, source: bytes, span: Span, max_chars: int | None) -> tuple[str, str, str]:
    """prefix, middle, suffix: the byte slices decoded apart, or a window's parts when the file is too long."""
    start, end, _ = span
    prefix = source[:start].decode("utf-8", "surrogatepass")
    middle = source[start:end].decode("utf-8", "surrogatepass")
    if max_chars is None or len(doc.text) <= max_chars:
        return prefix, middle, source[end:].decode("utf-8", "surrogatepass")
    start_char, end_char = len(prefix), len(prefix) + len(middle)
    window = window_for_span(doc.text, start_char, end_char, max_chars)
    if window is None:  # unreachable: spans are checked to fit before they are chosen
        raise AssertionError("middle longer than max_chars")
    return doc.text[window[0] : start_char], middle, doc.text[end_char : window[1]]


@dataclass(frozen=True)
class Window:
    """One line-aligned piece of a long document, in bytes of its UTF-8 source: each piece becomes its own sample."""

    start: int
    end: int


class SpanIndex:
    """A file's candidates sorted by start, parsed once, so each window of a long file finds its own quickly."""

    def __init__(self, spans: Spans, source: bytes) -> None:
        self.source = source  # the file's UTF-8 bytes, encoded once for all its windows
        self.has_error = spans.has_error
        self._sorted = {category: sorted(found) for category, found in spans.items()}
        self._starts = {category: [span[0] for span in found] for category, found in self._sorted.items()}

    def within(self, window: Window) -> Spans:
        """The candidates that lie wholly inside `window`."""
        inside = Spans(has_error=self.has_error)
        for category, found in self._sorted.items():
            starts = self._starts[category]
            first, last = bisect_left(starts, window.start), bisect_left(starts, window.end)
            inside[category] = [span for span in found[first:last] if span[1] <= window.end]
        return inside


def structured_fim(
    doc: Document,
    rng: random.Random,
    *,
    spm: bool,
    weights: Mapping[str, float] = DEFAULT_CATEGORY_WEIGHTS,
    max_chars: int | None = None,
    window: Window | None = None,
    index: SpanIndex | None = None,
) -> StructuredResult:
    """A FIM sample whose middle is one syntax unit of `doc`, or the reason there is none.

    `prefix + middle + suffix == doc.text` exactly. With `max_chars` and a longer document, the span is chosen
    first (among those no longer than `max_chars`) and the sample keeps a window around it: then
    `prefix + middle + suffix` is that window of the text (at most `max_chars` characters, cut at line
    boundaries where possible), not the whole document. With `window` (and the file's `index`, from one parse),
    the middle is chosen inside that piece and the sample is exactly the piece. The node type is recorded as
    `language:type`.
    """
    check_weights(weights)
    if window is not None:
        if index is None:
            return StructuredResult(reason="no_grammar")
        source, spans = index.source, index.within(window)
    else:
        source = doc.text.encode("utf-8", "surrogatepass")
        spans = find_spans(source, doc.language)
        if spans is None:
            return StructuredResult(reason="no_grammar")
    chosen = _select(rng, spans, weights, _Fit(source, None if window else max_chars))
    if chosen is None:
        return StructuredResult(reason="parse_error" if spans.has_error else "no_candidates")
    category, span = chosen
    if window is not None:
        start, end, _ = span
        decode = lambda a, b: source[a:b].decode("utf-8", "surrogatepass")  # noqa: E731
        prefix, middle, suffix = decode(window.start, start), decode(start, end), decode(end, window.end)
    else:
        prefix, middle, suffix = _parts(doc, source, span, max_chars)
    sample = Sample(
        mode="fim",
        path=doc.path,
        language=doc.language,
        prefix=prefix,
        middle=middle,
        suffix=suffix,
        spm=spm,
        node_type=f"{doc.language}:{span[2]}",
    )
    return StructuredResult(sample=sample, category=category, despite_errors=spans.has_error)
