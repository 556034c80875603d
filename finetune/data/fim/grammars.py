"""Tree-sitter grammars for the languages structured FIM understands, from the per-language wheels.

Grammars come only from installed `tree-sitter-<lang>` packages: nothing is downloaded at run time (the
`tree-sitter-language-pack` route fetches grammars on first use and fails offline). A language without a grammar
gets `None`, and the caller falls back to random FIM and counts it.
"""

from __future__ import annotations

import importlib
import threading
from functools import cache

from tree_sitter import Language, Parser

# language id -> (module of the grammar wheel, function in it that returns the grammar's pointer).
# JSX files are JavaScript to tree-sitter-javascript; `language_php` is the grammar that reads `<?php ... ?>` files
# with HTML around them (`language_php_only` expects bare PHP without the opening tag).
GRAMMAR_MODULES: dict[str, tuple[str, str]] = {
    "python": ("tree_sitter_python", "language"),
    "java": ("tree_sitter_java", "language"),
    "javascript": ("tree_sitter_javascript", "language"),
    "jsx": ("tree_sitter_javascript", "language"),
    "typescript": ("tree_sitter_typescript", "language_typescript"),
    "tsx": ("tree_sitter_typescript", "language_tsx"),
    "c": ("tree_sitter_c", "language"),
    "c++": ("tree_sitter_cpp", "language"),
    "c#": ("tree_sitter_c_sharp", "language"),
    "go": ("tree_sitter_go", "language"),
    "rust": ("tree_sitter_rust", "language"),
    "php": ("tree_sitter_php", "language_php"),
    "ruby": ("tree_sitter_ruby", "language"),
    "shell": ("tree_sitter_bash", "language"),
}

# Parsers keep per-parse state and are not safe to share between threads; each thread gets its own.
_local = threading.local()


@cache
def language_for(language: str) -> Language | None:
    """The grammar for a language id, loaded on first use; None when we have no grammar or its wheel is missing."""
    entry = GRAMMAR_MODULES.get(language)
    if entry is None:
        return None
    module_name, function_name = entry
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    return Language(getattr(module, function_name)())


def parser_for(language: str) -> Parser | None:
    """A parser for `language`, cached per thread; None when there is no grammar (the caller falls back)."""
    parsers: dict[str, Parser | None] | None = getattr(_local, "parsers", None)
    if parsers is None:
        parsers = _local.parsers = {}
    if language not in parsers:
        grammar = language_for(language)
        parsers[language] = Parser(grammar) if grammar is not None else None
    return parsers[language]
