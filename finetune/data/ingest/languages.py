"""Which language a file is written in, and how that language writes a one-line comment.

The language id is the lower-case key of `LANGUAGES`. `display` and `comment` follow aiXcoder's own inference
tables, so that a header we train with is the header its inference code sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath


@dataclass(frozen=True)
class Language:
    """A language's name as headers spell it and its comment wrapper (`{}` marks where the text goes)."""

    display: str
    comment: str
    extensions: tuple[str, ...] = ()
    filenames: tuple[str, ...] = ()
    interpreters: tuple[str, ...] = ()


# `.env` files have no suffix as far as pathlib is concerned; these are the usual names.
DOTENV_FILENAMES = tuple(
    ".env" + variant
    for variant in ("", ".local", ".example", ".sample", ".template", ".dev", ".development", ".test", ".staging")
) + (".env.prod", ".env.production")

LANGUAGES: dict[str, Language] = {
    "python": Language(
        "Python", "# {}", (".py", ".pyi", ".pyw"), ("SConstruct", "SConscript"), ("python", "python3", "python2")
    ),
    "java": Language("Java", "// {}", (".java",)),
    "javascript": Language("JavaScript", "// {}", (".js", ".mjs", ".cjs"), (), ("node", "nodejs")),
    "typescript": Language("TypeScript", "// {}", (".ts", ".mts", ".cts")),
    "tsx": Language("TypeScript with JSX", "// {}", (".tsx",)),
    "jsx": Language("JSX", "// {}", (".jsx",)),
    "c": Language("C", "// {}", (".c",)),
    "c++": Language("C++", "// {}", (".cpp", ".cc", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h", ".inl", ".ipp")),
    "c#": Language("C#", "// {}", (".cs", ".csx")),
    "go": Language("Go", "// {}", (".go",)),
    "rust": Language("Rust", "// {}", (".rs",)),
    "php": Language("PHP", "// {}", (".php",), (), ("php",)),
    "ruby": Language("Ruby", "# {}", (".rb", ".rake", ".gemspec"), ("Rakefile", "Gemfile"), ("ruby",)),
    "shell": Language("Shell", "# {}", (".sh", ".bash", ".zsh"), (".bashrc", ".zshrc"), ("sh", "bash", "zsh", "dash")),
    "kotlin": Language("Kotlin", "// {}", (".kt", ".kts")),
    "scala": Language("Scala", "// {}", (".scala", ".sc")),
    "swift": Language("swift", "// {}", (".swift",)),
    "dart": Language("Dart", "// {}", (".dart",)),
    "lua": Language("Lua", "// {}", (".lua",), (), ("lua",)),
    "perl": Language("Perl", "# {}", (".pl", ".pm"), (), ("perl",)),
    "r": Language("R", "# {}", (".r", ".R"), (), ("Rscript",)),
    "sql": Language("SQL", "-- {}", (".sql",)),
    "html": Language("HTML", "<!--{}-->", (".html", ".htm")),
    "css": Language("CSS", "/* {} */", (".css",)),
    "markdown": Language("Markdown", "<!--{}-->", (".md", ".markdown")),
    "yaml": Language("YAML", "# {}", (".yaml", ".yml")),
    "dockerfile": Language("Dockerfile", "# {}", (".dockerfile",), ("Dockerfile", "Containerfile")),
    "makefile": Language("Makefile", "# {}", (".mk", ".mak"), ("Makefile", "GNUmakefile", "makefile")),
    "cmake": Language("CMake", "# {}", (".cmake",), ("CMakeLists.txt",)),
    "haskell": Language("Haskell", "-- {}", (".hs",)),
    "julia": Language("Julia", "# {}", (".jl",), (), ("julia",)),
    "elixir": Language("Elixir", "# {}", (".ex", ".exs")),
    "powershell": Language("PowerShell", "# {}", (".ps1", ".psm1")),
    "zig": Language("Zig", "// {}", (".zig",)),
    "vue": Language("Vue", "<!--{}-->", (".vue",)),
    "ocaml": Language("OCaml", "(*{}*)", (".ml", ".mli")),
    # Configuration formats: kept so that a model learns a project's settings files, and so that the secrets
    # they tend to hold reach the secret scrubber instead of being skipped unseen.
    "json": Language("JSON", "// {}", (".json", ".jsonc")),
    "ini": Language("INI", "; {}", (".ini", ".cfg")),
    "properties": Language("Java Properties", "# {}", (".properties",)),
    "dotenv": Language("dotenv", "# {}", (".env",), DOTENV_FILENAMES),
}

_BY_FILENAME = {name: lang for lang, spec in LANGUAGES.items() for name in spec.filenames}
_BY_EXTENSION = {ext: lang for lang, spec in LANGUAGES.items() for ext in spec.extensions}
_BY_INTERPRETER = {name: lang for lang, spec in LANGUAGES.items() for name in spec.interpreters}
_SHEBANG = re.compile(r"^#!\s*(?:\S*/)?(?:env\s+(?:-\S+\s+)*)?([A-Za-z0-9_.+-]+)")
_VERSION_SUFFIX = re.compile(r"[0-9.]+$")


def detect_language(path: str, first_line: str = "") -> str | None:
    """The language id of `path` from its file name, extension, or shebang line; None when unknown."""
    name = PurePosixPath(path).name
    if name in _BY_FILENAME:
        return _BY_FILENAME[name]
    suffix = PurePosixPath(name).suffix
    if suffix and (suffix in _BY_EXTENSION or suffix.lower() in _BY_EXTENSION):
        return _BY_EXTENSION.get(suffix) or _BY_EXTENSION[suffix.lower()]
    match = _SHEBANG.match(first_line)
    if match:
        interpreter = match.group(1)
        return _BY_INTERPRETER.get(interpreter) or _BY_INTERPRETER.get(_VERSION_SUFFIX.sub("", interpreter))
    return None


def comment_line(language: str, text: str) -> str:
    """`text` as one comment line (with its newline) in `language`'s syntax; '#' for languages we don't know.

    In block-comment syntaxes (`/* */`, `<!-- -->`) a closer inside `text` is split with a space, so that a
    snippet holding one cannot end the comment early and leave the rest of its line as code.
    """
    spec = LANGUAGES.get(language)
    wrapper = spec.comment if spec else "# {}"
    closer = wrapper.split("{}")[1].strip()
    if closer:
        text = text.replace(closer, f"{closer[:-1]} {closer[-1]}")
    return wrapper.format(text) + "\n"
