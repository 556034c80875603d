"""Cut a completion at the end of the syntactic unit it was asked for, per language.

A model that does not stop (no EOS yet, or a base model that keeps writing the file) would otherwise be scored on
everything it wrote after the unit. The rule is chosen by what the benchmark item asks for, never by looking at
the reference:

- `line`: the first line;
- `header`: a function signature, up to the `:` (Python) or before the `{` that opens the body;
- `unit`: one statement, block, function or class: Python ends it at the next line back at (or left of) the
  unit's indentation that is not `elif`/`else`/`except`/`finally`; brace languages at a `;` or a closing `}` at
  depth 0 (or a line end at depth 0 where semicolons are optional); Ruby and shell count their keyword pairs;
- `statements`: several statements of a body: ends where the enclosing block closes (dedent, `}`, `end`, `fi`);
- `none`: unchanged.

Strings and comments are skipped when counting brackets. Languages without a rule are left unchanged (except
`line`). A cut drops trailing whitespace, so that `truncate(reference) == reference` for a whole syntax node.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

MODES: tuple[str, ...] = ("line", "header", "unit", "statements", "none")

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {")", "]", "}"}
# A line ending in one of these continues on the next line (optional-semicolon languages).
_CONTINUES = set(",=+-*/%&|^<>!?:.([{\\") | {"&&", "||"}
_PY_CLAUSES = {"elif", "else", "except", "finally"}


@dataclass(frozen=True)
class Syntax:
    """What the scanner needs to know about a language: comments, strings, and how blocks open and close."""

    kind: Literal["indent", "brace"]
    line_comments: tuple[str, ...]
    block_comment: tuple[str, str] | None = None
    quotes: str = "'\""
    triple_quotes: bool = False
    multiline_strings: bool = False
    comment_needs_space: bool = False  # shell: `$#` and `${#x}` are not comments
    optional_semicolons: bool = False
    count_parens: bool = True
    openers: frozenset[str] = frozenset()  # keywords that open a block at statement start
    anywhere_openers: frozenset[str] = frozenset()  # keywords that open a block wherever they stand (Ruby `do`)
    closers: frozenset[str] = frozenset()
    continuations: frozenset[str] = frozenset()  # words after a closed block that continue the same unit
    clauses: frozenset[str] = frozenset()  # words at depth 0 that end a run of statements (Ruby `else`, ...)


_C_LIKE = Syntax("brace", ("//",), ("/*", "*/"), continuations=frozenset({"else", "catch", "finally"}))
_JS_LIKE = Syntax(
    "brace", ("//",), ("/*", "*/"), quotes="'\"`", optional_semicolons=True,
    continuations=frozenset({"else", "catch", "finally"}),
)  # fmt: skip

SYNTAX: dict[str, Syntax] = {
    "python": Syntax("indent", ("#",), triple_quotes=True),
    "java": _C_LIKE,
    "c": _C_LIKE,
    "c++": _C_LIKE,
    "c#": _C_LIKE,
    "php": Syntax("brace", ("//", "#"), ("/*", "*/"), continuations=frozenset({"else", "elseif", "catch", "finally"})),
    "javascript": _JS_LIKE,
    "jsx": _JS_LIKE,
    "typescript": _JS_LIKE,
    "tsx": _JS_LIKE,
    "go": Syntax("brace", ("//",), ("/*", "*/"), quotes="'\"`", optional_semicolons=True,
                 continuations=frozenset({"else"})),  # fmt: skip
    "rust": Syntax("brace", ("//",), ("/*", "*/"), quotes='"', optional_semicolons=True,
                   continuations=frozenset({"else"})),  # fmt: skip
    "ruby": Syntax(
        "brace", ("#",), multiline_strings=True, optional_semicolons=True,
        openers=frozenset(["def", "class", "module", "if", "unless", "while", "until", "for", "case", "begin"]),
        anywhere_openers=frozenset({"do"}), closers=frozenset({"end"}),
        clauses=frozenset(["else", "elsif", "when", "in", "rescue", "ensure"]),
    ),  # fmt: skip
    "shell": Syntax(
        "brace", ("#",), multiline_strings=True, comment_needs_space=True, optional_semicolons=True,
        count_parens=False, openers=frozenset(["if", "case", "for", "while", "until", "select"]),
        closers=frozenset(["fi", "esac", "done"]), clauses=frozenset(["then", "else", "elif", "do"]),
    ),  # fmt: skip
}


@dataclass(frozen=True)
class Token:
    """A code token: a word, one punctuation character, or a newline (strings and comments are skipped)."""

    pos: int
    text: str


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _skip_string(text: str, i: int, syntax: Syntax) -> int:
    """Index just past the string literal that starts at `i` (or where an unterminated one gives up)."""
    quote = text[i]
    if syntax.triple_quotes and text.startswith(quote * 3, i):
        j = i + 3
        while j < len(text):
            if text[j] == "\\":
                j += 2
            elif text.startswith(quote * 3, j):
                return j + 3
            else:
                j += 1
        return len(text)
    j = i + 1
    while j < len(text):
        ch = text[j]
        if ch == "\\" and not (quote == "'" and syntax.comment_needs_space):  # shell '...' has no escapes
            j += 2
        elif ch == quote:
            return j + 1
        elif ch == "\n" and quote != "`" and not syntax.multiline_strings:
            return j  # an unterminated one-line string ends with its line
        else:
            j += 1
    return len(text)


def tokens(text: str, syntax: Syntax) -> Iterator[Token]:
    """The code tokens of `text`: words, punctuation and newlines, outside strings and comments."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\f\v":
            i += 1
            continue
        marker = next((m for m in syntax.line_comments if text.startswith(m, i)), None)
        if marker and (not syntax.comment_needs_space or i == 0 or text[i - 1] in " \t\n;"):
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if syntax.block_comment and text.startswith(syntax.block_comment[0], i):
            end = text.find(syntax.block_comment[1], i + len(syntax.block_comment[0]))
            i = n if end < 0 else end + len(syntax.block_comment[1])
            continue
        if ch in syntax.quotes:
            i = _skip_string(text, i, syntax)
            continue
        if _is_word(ch):
            j = i + 1
            while j < n and _is_word(text[j]):
                j += 1
            yield Token(i, text[i:j])
            i = j
            continue
        if ch in "&|" and text.startswith(ch * 2, i):
            yield Token(i, ch * 2)
            i += 2
            continue
        yield Token(i, ch)
        i += 1


def truncate(completion: str, language: str, mode: str, prefix: str = "") -> str:
    """`completion` cut at the end of the unit `mode` asks for; `prefix` is the text before the cursor."""
    return _truncate(completion, language, mode, prefix)[0]


def settled(completion: str, language: str, mode: str, prefix: str = "") -> bool:
    """Whether `truncate` has cut `completion` at a place no continuation of it can move: generation may stop.

    The cut is settled when every character the decision read is already there; a word, `&`, `|` or `/` at the
    very end could still grow (`el` -> `else`, `/` -> `//`), and a trailing U+FFFD is half a UTF-8 character.
    """
    known = completion.rstrip("\ufffd")
    _, reach = _truncate(known, language, mode, prefix)
    return reach is not None and reach <= len(known)


def _truncate(completion: str, language: str, mode: str, prefix: str) -> tuple[str, int | None]:
    """The truncated text, and how many characters of `completion` decided the cut (None: nothing was cut)."""
    if mode not in MODES:
        raise ValueError(f"unknown truncation mode {mode!r}")
    if mode == "none" or not completion:
        return completion, None
    if mode == "line":
        end = completion.find("\n")
        return completion.split("\n", 1)[0].removesuffix("\r"), (None if end < 0 else end + 1)
    syntax = SYNTAX.get(language)
    if syntax is None:
        return completion, None
    reach = _Reach(len(completion))
    if syntax.kind == "indent":
        pos = _indent_cut(completion, syntax, mode, prefix, reach)
    else:
        pos = _brace_cut(completion, syntax, mode, reach)
    return (completion, None) if pos is None else (_cut(completion, pos), reach.end)


class _Reach:
    """How much of the text a cut decision has read, so `settled` knows whether more text could change it."""

    _GROWS = frozenset("&|/")  # `&&`, `||`, `//`, `/*`: one more character could make these another token

    def __init__(self, length: int) -> None:
        self.length = length
        self.end = 0

    def upto(self, end: int) -> None:
        self.end = max(self.end, end)

    def token(self, token: Token | None) -> None:
        """`token` was read; None: the decision saw that no token follows, which only the end of text settles."""
        if token is None:
            self.upto(self.length + 1)
            return
        last = token.text[-1]
        self.upto(token.pos + len(token.text) + (last in self._GROWS or _is_word(last)))


def _cut(text: str, pos: int) -> str:
    return text[:pos].rstrip()


# ------------------------------------------------------------------------------------------- indentation (Python)


def _indent_of(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _indent_cut(completion: str, syntax: Syntax, mode: str, prefix: str, reach: _Reach) -> int | None:
    lead = prefix[prefix.rfind("\n") + 1 :]
    base = len(lead) if not lead.strip() else _indent_of(lead)
    depth = 0
    previous: Token | None = None
    base_lines: list[str] = [completion.lstrip(" \t")[:1]]  # first characters of the unit's lines at `base`
    for token in tokens(completion, syntax):
        reach.token(token)
        text = token.text
        if text in _OPEN:
            depth += 1
        elif text in _CLOSE:
            if depth == 0:
                return token.pos
            depth -= 1
        elif mode == "header" and depth == 0 and text == ":":
            return token.pos + 1
        elif text == "\n" and depth == 0 and not (previous is not None and previous.text == "\\"):
            if mode == "header":
                return token.pos
            if _python_unit_ends(completion, token.pos + 1, base, mode, base_lines, reach):
                return token.pos
        previous = token
    return None


def _python_unit_ends(text: str, start: int, base: int, mode: str, base_lines: list[str], reach: _Reach) -> bool:
    """Whether the code line that follows position `start` (skipping blank and comment lines) leaves the unit."""
    while start < len(text):
        end = text.find("\n", start)
        line = text[start : end if end >= 0 else len(text)]
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        if end < 0:
            reach.upto(len(text) + 1)
            return False
        start = end + 1
    else:
        reach.upto(len(text) + 1)
        return False
    indent = _indent_of(line)
    reach.upto(start + indent + 1)
    if indent < base:
        return True
    if mode == "statements" or indent > base:
        return False
    first = stripped.split(None, 1)[0]
    first_end = len(line) - len(line.lstrip()) + len(first)  # the first word is whole once something follows it
    reach.upto(start + first_end + 1)
    if first.rstrip(":") in _PY_CLAUSES:
        return False
    if all(c == "@" for c in base_lines):  # decorators, then the definition they decorate
        base_lines.append(stripped[:1])
        return False
    return True


# ------------------------------------------------------------------------------ brackets and keywords (the rest)


def _brace_cut(completion: str, syntax: Syntax, mode: str, reach: _Reach) -> int | None:
    toks = [t for t in tokens(completion, syntax) if syntax.count_parens or t.text not in "()"]
    first = next((t for t in toks if t.text != "\n"), None)
    reach.token(first)
    first_word = first.text if first is not None else ""
    depth = 0
    at_statement_start = True
    for k, token in enumerate(toks):
        reach.token(token)
        text = token.text
        starts = at_statement_start
        at_statement_start = text in ("\n", ";", "{", "(", "=", "&&", "||", "|")
        if text in _OPEN or (text in syntax.openers and starts) or text in syntax.anywhere_openers:
            if mode == "header" and depth == 0 and text == "{":
                return token.pos
            depth += 1
            continue
        if text in _CLOSE or text in syntax.closers:
            if depth == 0:
                return token.pos
            depth -= 1
            if depth == 0 and mode == "unit" and text not in (")", "]"):
                end = _after_block(toks, k, syntax, first_word, reach)
                if end is not None:
                    return end
            continue
        if depth != 0:
            continue
        if text in syntax.clauses and starts and mode == "statements":
            return token.pos
        if text == ";" and mode in ("unit", "header"):
            return token.pos + (mode == "unit")
        if text == "\n" and mode == "header" and first_word and syntax.optional_semicolons and k > 0:
            return token.pos
        if text == "\n" and mode == "unit" and syntax.optional_semicolons and _statement_ends(toks, k, syntax, reach):
            return token.pos
    return None


def _next_code(toks: list[Token], k: int, reach: _Reach) -> Token | None:
    """The first token after index `k` that is not a newline."""
    token = next((t for t in toks[k + 1 :] if t.text != "\n"), None)
    reach.token(token)
    return token


def _after_block(toks: list[Token], k: int, syntax: Syntax, first_word: str, reach: _Reach) -> int | None:
    """Where a unit ends after the block closed at token `k`; None when what follows continues it."""
    nxt = _next_code(toks, k, reach)
    close_end = toks[k].pos + len(toks[k].text)
    if nxt is None:
        return None
    if nxt.text in syntax.continuations or (nxt.text == "while" and first_word == "do"):
        return None
    if nxt.text in (".", "?") or (nxt.text == "," and syntax is not SYNTAX["shell"]):
        return None
    if nxt.text == ";" and not any(t.text == "\n" for t in toks[k + 1 : toks.index(nxt)]):
        return nxt.pos + 1  # `};` after a class, struct or assigned closure
    if nxt.text == ")" or nxt.text in syntax.closers:
        return None  # the next token closes the enclosing block: the loop cuts there
    return close_end


def _statement_ends(toks: list[Token], k: int, syntax: Syntax, reach: _Reach) -> bool:
    """A newline at depth 0 ends a statement unless the line or the next one shows it goes on."""
    previous = next((t for t in reversed(toks[:k]) if t.text != "\n"), None)
    if previous is None or previous.text in _CONTINUES:
        return False
    nxt = _next_code(toks, k, reach)
    if nxt is None:
        return False
    return not (nxt.text in (".", "?", "&&", "||", "|") or nxt.text in syntax.continuations)
