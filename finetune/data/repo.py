"""Turn a repository directory into `Document`s, leaving out what a code model should not learn from.

Real repositories hold symlink loops, 50 MB data dumps, vendored dependencies, binaries and files in odd encodings.
The walk survives all of them, never reads an oversized file whole, and counts every file it leaves out by reason,
so the user can see what the model was trained on and why the rest was not.
"""

from __future__ import annotations

import difflib
import os
import stat
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pathspec

from finetune.data.languages import LANGUAGES, detect_language
from finetune.data.sample import Document
from finetune.errors import UserError

# Why a file was left out; also the order in which the reasons are checked.
SKIP_REASONS = (
    "excluded",  # matched a user `exclude` pattern
    "gitignored",  # matched .gitignore / .git/info/exclude
    "vendored",  # minified or generated file (vendored folders are counted in `skipped_dirs`)
    "symlink_outside",  # a symlinked file whose target lies outside the repository
    "unreadable",  # stat/open failed, a broken symlink, or not a regular file (FIFO, socket, device)
    "empty",  # zero bytes or only whitespace
    "binary",  # known binary extension or a NUL byte in the first 8 KiB
    "unknown_language",  # neither name, extension nor shebang tells the language
    "other_language",  # a language the `languages` filter leaves out
    "too_large",  # larger than `max_file_bytes`
    "invalid_utf8",  # not valid UTF-8 text (or a file name that is not)
)

# Folders that hold other people's code, build outputs or caches: never walked into, whatever .gitignore says.
_VENDORED_DIR_NAMES = """
    node_modules bower_components jspm_packages vendor third_party thirdparty Pods Carthage
    .venv venv env .env virtualenv site-packages __pycache__ build dist target out _build .build .gradle
    .tox .nox .mypy_cache .pytest_cache .ruff_cache .hypothesis .ipynb_checkpoints .cache .idea .vscode .vs
    .next .nuxt .svelte-kit .terraform .eggs htmlcov
"""
VENDORED_DIRS = frozenset(_VENDORED_DIR_NAMES.split())
VENDORED_DIR_SUFFIXES = (".egg-info", ".dist-info")

# Minified or machine-generated files: code a model should not learn to write.
VENDORED_FILES = pathspec.GitIgnoreSpec.from_lines(
    ["*.min.js", "*.min.css", "*-min.js", "*.bundle.js", "*_pb2.py", "*_pb2_grpc.py", "*.pb.go", "*.pb.cc", "*.pb.h"]
)

_BINARY_EXTENSION_LIST = """
    .png .jpg .jpeg .gif .bmp .ico .icns .webp .tif .tiff .psd .heic
    .mp3 .mp4 .wav .flac .ogg .avi .mov .mkv .webm
    .zip .gz .tgz .bz2 .xz .zst .7z .rar .tar .jar .war .whl .egg
    .pdf .doc .docx .xls .xlsx .ppt .pptx .odt
    .exe .dll .so .dylib .a .o .obj .lib .bin .elf .class .pyc .pyo .pyd .wasm .dex .apk .ipa .iso .dmg
    .ttf .otf .woff .woff2 .eot
    .db .sqlite .sqlite3 .mdb .parquet .arrow .feather .avro .orc
    .npy .npz .pkl .pickle .pt .pth .ckpt .safetensors .onnx .h5 .hdf5 .tflite .pb .gguf .joblib
"""
BINARY_EXTENSIONS = frozenset(_BINARY_EXTENSION_LIST.split())

SNIFF_BYTES = 8192  # NUL bytes are looked for here (as git does); the shebang line is read from here too


@dataclass
class IngestReport:
    """What a walk saw, kept and left out (by reason), so no file is dropped without a trace."""

    files_seen: int = 0
    files_kept: int = 0
    bytes_seen: int = 0
    bytes_kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_dirs: Counter[str] = field(default_factory=Counter)
    languages: Counter[str] = field(default_factory=Counter)

    def merge(self, other: IngestReport) -> IngestReport:
        """Add `other`'s counts into this report (for several sources); returns self so calls can chain."""
        self.files_seen += other.files_seen
        self.files_kept += other.files_kept
        self.bytes_seen += other.bytes_seen
        self.bytes_kept += other.bytes_kept
        self.skipped.update(other.skipped)
        self.skipped_dirs.update(other.skipped_dirs)
        self.languages.update(other.languages)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able numbers, saved next to a prepared dataset."""
        return {
            "files_seen": self.files_seen,
            "files_kept": self.files_kept,
            "bytes_seen": self.bytes_seen,
            "bytes_kept": self.bytes_kept,
            "skipped": _ordered(self.skipped),
            "skipped_dirs": _ordered(self.skipped_dirs),
            "languages": _ordered(self.languages),
        }

    def summary_lines(self) -> list[str]:
        """A few short lines for the terminal."""
        lines = [
            f"kept {self.files_kept} of {self.files_seen} files "
            f"({_human_bytes(self.bytes_kept)} of {_human_bytes(self.bytes_seen)})"
        ]
        if self.languages:
            lines.append("languages: " + _counts_text(self.languages))
        if self.skipped:
            lines.append("skipped files: " + _counts_text(self.skipped))
        if self.skipped_dirs:
            lines.append("skipped folders: " + _counts_text(self.skipped_dirs))
        return lines


def _ordered(counts: Counter[str]) -> dict[str, int]:
    """Largest count first, ties by name, so reports diff cleanly."""
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _counts_text(counts: Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in _ordered(counts).items())


def _human_bytes(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


@dataclass(frozen=True)
class _IgnoreFile:
    """The patterns of one ignore file; `base` is the POSIX folder they are relative to ('' for the root)."""

    base: str
    spec: pathspec.PathSpec

    def verdict(self, rel: str, is_dir: bool) -> bool | None:
        """True: ignored, False: re-included by a negation, None: no pattern matches."""
        sub = rel[len(self.base) + 1 :] if self.base else rel
        return self.spec.check_file(sub + "/" if is_dir else sub).include


def _is_ignored(rules: Sequence[_IgnoreFile], rel: str, is_dir: bool) -> bool:
    """Git's precedence: a deeper ignore file overrides a shallower one; within a file the last match wins."""
    for rule in reversed(rules):
        verdict = rule.verdict(rel, is_dir)
        if verdict is not None:
            return verdict
    return False


def _compile_lenient(lines: list[str]) -> pathspec.PathSpec:
    """Patterns from a repository's own ignore file: a malformed line is dropped (as git does), not fatal."""
    try:
        return pathspec.GitIgnoreSpec.from_lines(lines)
    except ValueError:
        return pathspec.GitIgnoreSpec.from_lines([line for line in lines if _valid_pattern(line)])


def _valid_pattern(line: str) -> bool:
    try:
        pathspec.GitIgnoreSpec.from_lines([line])
    except ValueError:
        return False
    return True


def _load_ignore_file(path: str, base: str) -> list[_IgnoreFile]:
    """The rules in `path` (none when it is missing or unreadable: a broken ignore file must not stop a walk)."""
    try:
        with open(path, "rb") as handle:
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return [_IgnoreFile(base, _compile_lenient(lines))] if lines else []


def _compile_user_patterns(exclude: Sequence[str]) -> pathspec.PathSpec:
    """The user's own `exclude` patterns: a malformed one is the user's to fix, so it is an error."""
    if isinstance(exclude, str):
        exclude = [exclude]
    for pattern in exclude:
        if not _valid_pattern(pattern):
            raise UserError(f"invalid exclude pattern {pattern!r}: use gitignore syntax, e.g. 'docs/' or '*.min.js'")
    return pathspec.GitIgnoreSpec.from_lines(list(exclude))


def _check_root(root: str | Path) -> str:
    """The repository's real absolute path, or a one-line error the user can act on."""
    path = Path(root).expanduser()
    if not path.exists():
        raise UserError(f"repository path {root} does not exist: check the path (relative to {Path.cwd()})")
    if not path.is_dir():
        raise UserError(f"repository path {root} is not a directory: point it at the repository's top folder")
    return os.path.realpath(path)


def _check_languages(languages: Sequence[str] | None) -> frozenset[str] | None:
    """The `languages` filter as known ids; a typo is named with the nearest id rather than silently matching none."""
    if languages is None:
        return None
    if isinstance(languages, str):
        languages = [languages]
    wanted = frozenset(name.lower() for name in languages)
    for name in sorted(wanted):
        if name not in LANGUAGES:
            near = difflib.get_close_matches(name, list(LANGUAGES), n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(sorted(LANGUAGES))}"
            raise UserError(f"unknown language {name!r} in languages: {hint}")
    return wanted


def _fix_for(reason: str, max_file_bytes: int) -> str:
    """How a user gets files past the check that dropped most of them."""
    return {
        "excluded": "check the exclude patterns",
        "gitignored": "check the repository's .gitignore files and .git/info/exclude",
        "vendored": "minified/generated files are always skipped; point at hand-written source",
        "symlink_outside": "symlinks to files outside the repository are skipped; copy those files in",
        "unreadable": "check file permissions and broken symlinks",
        "empty": "the files are empty; point at a repository with source code",
        "binary": "point at source code, not build outputs or assets",
        "unknown_language": "add the file extension to finetune/data/languages.py, or point at source code",
        "other_language": "widen or remove the languages filter",
        "too_large": f"raise max_file_bytes (now {max_file_bytes})",
        "invalid_utf8": "convert the files to UTF-8",
    }.get(reason, "check the path")


def _nothing_usable(root: str | Path, report: IngestReport, max_file_bytes: int) -> UserError:
    if not report.skipped:
        where = f" outside skipped folders ({_counts_text(report.skipped_dirs)})" if report.skipped_dirs else ""
        return UserError(f"no files found in repository {root}{where}: point at a folder with source code")
    reason, count = next(iter(_ordered(report.skipped).items()))  # the commonest; ties by name
    return UserError(
        f"no usable files in repository {root}: {report.files_seen} seen, most skipped as {reason} ({count}); "
        f"{_fix_for(reason, max_file_bytes)}"
    )


class _Skip(Exception):
    """A file is left out; `reason` is one of SKIP_REASONS."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Walker:
    """One walk's settings and results; small methods so each skip rule reads on its own."""

    def __init__(self, top: str, max_file_bytes: int, user: pathspec.PathSpec, wanted: frozenset[str] | None):
        self.top = top
        self.max_file_bytes = max_file_bytes
        self.user = user
        self.wanted = wanted
        self.report = IngestReport()
        self.documents: list[Document] = []

    def run(self) -> None:
        """Depth-first with an explicit stack (no recursion limit); symlinked folders are never entered."""
        base_rules = _load_ignore_file(os.path.join(self.top, ".git", "info", "exclude"), "")
        stack: list[tuple[str, str, tuple[_IgnoreFile, ...]]] = [(self.top, "", tuple(base_rules))]
        while stack:
            directory, rel_dir, rules = stack.pop()
            rules = rules + tuple(_load_ignore_file(os.path.join(directory, ".gitignore"), rel_dir))
            for entry in self._scan(directory):
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                kind = _entry_kind(entry)
                if kind == "dir":
                    reason = self._dir_skip_reason(entry.name, rel, rules)
                    if reason:
                        self.report.skipped_dirs[reason] += 1
                    else:
                        stack.append((entry.path, rel, rules))
                elif kind == "dir_symlink":
                    self.report.skipped_dirs["symlink"] += 1
                else:
                    self._file(entry, rel, rules)
        self.documents.sort(key=lambda doc: doc.path)

    def _scan(self, directory: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(directory) as iterator:
                return sorted(iterator, key=lambda entry: entry.name)
        except OSError:
            self.report.skipped_dirs["unreadable"] += 1
            return []

    def _dir_skip_reason(self, name: str, rel: str, rules: Sequence[_IgnoreFile]) -> str | None:
        if name == ".git":
            return "git"
        if self.user.match_file(rel + "/"):
            return "excluded"
        if _is_ignored(rules, rel, is_dir=True):
            return "gitignored"
        if name in VENDORED_DIRS or name.endswith(VENDORED_DIR_SUFFIXES):
            return "vendored"
        return None

    def _file(self, entry: os.DirEntry[str], rel: str, rules: Sequence[_IgnoreFile]) -> None:
        """Count one file as seen, then keep it or count why not."""
        self.report.files_seen += 1
        outside = entry.is_symlink() and not self._inside(entry.path)
        info = None if outside else _stat(entry.path)
        size = info.st_size if info is not None and stat.S_ISREG(info.st_mode) else 0
        self.report.bytes_seen += size
        try:
            self._check_name(rel, rules, outside)
            document = self._load(entry.path, rel, info)
        except _Skip as skip:
            self.report.skipped[skip.reason] += 1
            return
        self.report.files_kept += 1
        self.report.bytes_kept += size
        self.report.languages[document.language] += 1
        self.documents.append(document)

    def _inside(self, path: str) -> bool:
        """Whether a symlink resolves inside the repository (realpath never raises, even on a loop)."""
        target = os.path.realpath(path)
        return target == self.top or target.startswith(self.top.rstrip(os.sep) + os.sep)

    def _check_name(self, rel: str, rules: Sequence[_IgnoreFile], outside: bool) -> None:
        """The checks that need no file access."""
        if self.user.match_file(rel):
            raise _Skip("excluded")
        if _is_ignored(rules, rel, is_dir=False):
            raise _Skip("gitignored")
        if VENDORED_FILES.match_file(rel):
            raise _Skip("vendored")
        if outside:
            raise _Skip("symlink_outside")
        if not _is_utf8(rel):  # a file name in another encoding: Document.path must be valid text downstream
            raise _Skip("invalid_utf8")

    def _load(self, path: str, rel: str, info: os.stat_result | None) -> Document:
        """The checks that look at the file: size from stat first, so an oversized file is never read whole."""
        if info is None or not stat.S_ISREG(info.st_mode):
            raise _Skip("unreadable")
        if info.st_size == 0:
            raise _Skip("empty")
        if Path(rel).suffix.lower() in BINARY_EXTENSIONS:
            raise _Skip("binary")
        language = detect_language(rel) or self._language_from_head(path, rel)
        if self.wanted is not None and language not in self.wanted:
            raise _Skip("other_language")
        if info.st_size > self.max_file_bytes:
            raise _Skip("too_large")
        return Document(path=rel, language=language, text=self._read_text(path))

    def _language_from_head(self, path: str, rel: str) -> str:
        """The language a shebang line names, reading at most SNIFF_BYTES (the file may be huge)."""
        head = _read_bytes(path, SNIFF_BYTES)
        if b"\0" in head:
            raise _Skip("binary")
        if not head.startswith(b"#!"):
            raise _Skip("unknown_language")
        first_line = head.split(b"\n", 1)[0].decode("utf-8", errors="replace")
        language = detect_language(rel, first_line)
        if language is None:
            raise _Skip("unknown_language")
        return language

    def _read_text(self, path: str) -> str:
        data = _read_bytes(path, self.max_file_bytes + 1)
        if len(data) > self.max_file_bytes:  # the file grew after stat
            raise _Skip("too_large")
        if b"\0" in data[:SNIFF_BYTES]:
            raise _Skip("binary")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Skip("invalid_utf8") from None
        if not text.strip():
            raise _Skip("empty")
        return text


def _entry_kind(entry: os.DirEntry[str]) -> str:
    """'dir', 'dir_symlink' or 'file' (anything else, including broken and looping symlinks)."""
    try:
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        if entry.is_symlink() and entry.is_dir():
            return "dir_symlink"
    except OSError:
        pass
    return "file"


def _is_utf8(text: str) -> bool:
    """False for names os.scandir decoded with surrogate escapes (bytes that are not UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def _read_bytes(path: str, limit: int) -> bytes:
    """At most `limit` bytes of `path` (never more: the file may be huge)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(limit)
    except OSError:
        raise _Skip("unreadable") from None


def walk_repository(
    root: str | Path,
    *,
    max_file_bytes: int = 1_000_000,
    exclude: Sequence[str] = (),
    languages: Sequence[str] | None = None,
) -> tuple[list[Document], IngestReport]:
    """The repository's usable source files as Documents (sorted by POSIX path), and a report of the rest.

    Honours .gitignore files at every level and .git/info/exclude; always skips .git and vendored/build/cache
    folders; `exclude` adds gitignore-style patterns relative to `root`; `languages` keeps only those language ids.
    Raises UserError when `root` is unusable or no file survives, naming the commonest skip reason and its fix.
    """
    if max_file_bytes < 1:
        raise UserError(f"max_file_bytes must be positive, got {max_file_bytes}: set it to e.g. 1000000")
    top = _check_root(root)
    walker = _Walker(top, max_file_bytes, _compile_user_patterns(exclude), _check_languages(languages))
    walker.run()
    if not walker.documents:
        raise _nothing_usable(root, walker.report, max_file_bytes)
    return walker.documents, walker.report
