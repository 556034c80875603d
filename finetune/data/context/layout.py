"""Repository-level context: the rest of a repository, shown to the model next to the file it learns from.

Two tools, both model-agnostic (only `formats.py` turns what they return into token ids):

- `order_files` lays out a repository's files so that related files sit together and a file's dependencies come
  before it, as repository-level pretraining data is laid out (imports resolved for Python, JS/TS and C/C++; every
  language grouped by directory); `neighbor_snippets` turns that order into context: the files just before a file.
- `RepoRetriever` + `with_retrieved_context` put BM25-retrieved snippets of *other* files in front of a FIM (or
  plain) sample, the way a completion plugin sends cross-file context at serving time, so training sees what
  inference sends.

Layouts of the retrieved context (checked against what the model makers document):

- Qwen2.5-Coder ("qwen"): repo-level FIM format of the tech report (arXiv 2409.12186, Figure 4) and of
  QwenLM/Qwen2.5-Coder `examples/Qwen2.5-Coder-repolevel-fim.py`, confirmed by a maintainer in
  QwenLM/Qwen3-Coder#343::

      <|repo_name|>{repo_name}\\n<|file_sep|>{path1}\\n{code1}\\n ... <|file_sep|>{path}\\n<|fim_prefix|>{pre}...

  i.e. everything, the current file's own `<|file_sep|>{path}\\n` included, stands before `<|fim_prefix|>`.
- StarCoder2 ("starcoder"): the paper (arXiv 2402.19173, section 5.1) gives
  `<repo_name>reponame<file_sep>filepath1\\ncode1<file_sep>filepath2\\ncode2 ... <|endoftext|>` (no newline after the
  repository name, none added after a file's code), and "FIM is applied inside each file regardless of the repo
  structure (the filepath in the beginning of a file is optional)" (bigcode-project/starcoder2#10, L. Ben Allal;
  Megatron-LM's `split_sample` applies FIM to each `<file_sep>` fragment). So the current file's `{path}\\n` is
  the start of its *prefix*: `... <file_sep><fim_prefix>{path}\\n{pre}<fim_suffix>...`.
- Every other family has no repository tokens: each snippet becomes comment lines in the sample's language
  (`Path: {path}` then the snippet's lines, the way Copilot-style plugins send cross-file snippets), at the start
  of the prefix.
"""

from __future__ import annotations

import math
import posixpath
import random
import re
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Literal

import bm25s
import numpy as np

from finetune.data.ingest.languages import comment_line
from finetune.data.tokenize.families import FAMILIES
from finetune.data.types import Document, Sample

# ---------------------------------------------------------------------------------------------------------------
# File order
# ---------------------------------------------------------------------------------------------------------------

_PY_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w. \t,]+)", re.M)
_PY_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#;]*)", re.M)
_JS_IMPORT = re.compile(r"""(?:\bfrom|\bimport|\brequire)\s*\(?\s*['"](\.{1,2}(?:/[^'"\n]*)?)['"]""")
_C_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*[<"]([^>"\n]+)[>"]', re.M)

_PY_SUFFIXES = (".py", ".pyi")
_JS_SUFFIXES = (".ts", ".tsx", ".js", ".jsx", ".mjs", ".cjs", ".mts", ".cts", ".vue")
_JS_LANGUAGES = frozenset({"javascript", "typescript", "tsx", "jsx", "vue"})
_C_LANGUAGES = frozenset({"c", "c++"})


def _dir_parts(path: str) -> list[str]:
    """The directory components of a repository path ([] at the root)."""
    head = posixpath.dirname(path)
    return head.split("/") if head else []


def _shared_dirs(a: str, b: str) -> int:
    """How many leading directories two paths share: the path-similarity measure used throughout."""
    count = 0
    for x, y in zip(_dir_parts(a), _dir_parts(b), strict=False):
        if x != y:
            break
        count += 1
    return count


def _python_module_parts(path: str) -> list[str]:
    """`pkg/mod.py` -> [pkg, mod]; `pkg/__init__.py` -> [pkg]."""
    stem = path[: -len(posixpath.splitext(path)[1])]
    parts = stem.split("/")
    return parts[:-1] if parts[-1] == "__init__" else parts


class _Resolver:
    """Maps import strings to repository files; one instance per repository."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = paths
        self.index: dict[str, int] = {}
        for i, path in enumerate(paths):
            self.index.setdefault(path, i)
        self.modules: dict[str, list[int]] = defaultdict(list)
        self.scripts: dict[tuple[str, str], int] = {}  # (directory, name) -> a module outside any package
        self.basenames: dict[str, list[int]] = defaultdict(list)
        for i, path in enumerate(paths):
            self.basenames[posixpath.basename(path)].append(i)
            if path.endswith(_PY_SUFFIXES):
                self._add_python(path, i)

    def _add_python(self, path: str, i: int) -> None:
        """Register a Python file under its dotted name from the repository root, and from its top package
        (`src/pkg/mod.py` is `pkg.mod`). A module in no package below the root is importable only by its
        neighbours (the script's directory leads `sys.path`): `tools/gc.py` must not capture `import gc`."""
        parts = _python_module_parts(path)
        if not parts:
            return
        start = len(parts) - 1
        while start > 0 and "/".join(parts[:start]) + "/__init__.py" in self.index:
            start -= 1
        self.modules[".".join(parts)].append(i)
        if start == 0:
            return
        if start == len(parts) - 1 and not path.endswith("__init__.py"):
            self.scripts.setdefault((posixpath.dirname(path), parts[-1]), i)
        else:
            self.modules[".".join(parts[start:])].append(i)

    def closest(self, candidates: Sequence[int], importer: str) -> int | None:
        """Of several files an import could mean, the one nearest the importer (then the first path)."""
        if not candidates:
            return None
        return min(candidates, key=lambda i: (-_shared_dirs(self.paths[i], importer), self.paths[i], i))

    def first_existing(self, candidates: Sequence[str]) -> int | None:
        """The first of `candidates` that is a repository file."""
        return next((self.index[c] for c in candidates if c in self.index), None)

    def python_path(self, stem: str) -> int | None:
        """A module given as a path without suffix: `a/b` -> a/b.py or a/b/__init__.py."""
        return self.first_existing([stem + s for s in _PY_SUFFIXES] + [f"{stem}/__init__{s}" for s in _PY_SUFFIXES])

    def python_module(self, name: str, importer: str) -> int | None:
        """An absolute dotted module name: a neighbouring script first, as Python's `sys.path` has it."""
        if not name:
            return None
        script = self.scripts.get((posixpath.dirname(importer), name))
        return script if script is not None else self.closest(self.modules.get(name, ()), importer)


def _python_deps(text: str, path: str, resolver: _Resolver) -> Iterator[int | None]:
    """Files named by `import a.b` and `from [..]a import b` (b may be a submodule), relative imports included."""
    for match in _PY_IMPORT.finditer(text):
        for part in match.group(1).split(","):
            words = part.split()
            if words:
                yield resolver.python_module(words[0], path)
    for match in _PY_FROM.finditer(text):
        dots, module, names_text = match.groups()
        names = [w[0] for w in (n.split() for n in names_text.strip("()").split(",")) if w and w[0] != "*"]
        if dots:
            yield from _python_relative_deps(path, len(dots), module, names, resolver)
        else:
            yield resolver.python_module(module, path)
            yield from (resolver.python_module(f"{module}.{name}", path) for name in names)


def _python_relative_deps(
    path: str, level: int, module: str, names: list[str], resolver: _Resolver
) -> Iterator[int | None]:
    """`from ..a import b` in `path`: the package `level - 1` directories up, its module `a`, and `a/b` in case b
    is a submodule; `from . import b`: the package's `__init__` and `b`."""
    base = posixpath.dirname(path)
    for _ in range(level - 1):
        base = posixpath.dirname(base)
    stem = posixpath.join(base, *module.split(".")) if module else base
    yield resolver.python_path(stem) if module else resolver.python_path(posixpath.join(base, "__init__"))
    yield from (resolver.python_path(posixpath.join(stem, name)) for name in names)


def _js_deps(text: str, path: str, resolver: _Resolver) -> Iterator[int | None]:
    """Files named by relative `import ... from './x'`, `import('./x')`, `require('./x')`, `export ... from`."""
    for match in _JS_IMPORT.finditer(text):
        target = posixpath.normpath(posixpath.join(posixpath.dirname(path), match.group(1)))
        if target.startswith(".."):
            continue
        stem, suffix = posixpath.splitext(target)
        stems = [target, stem] if suffix in _JS_SUFFIXES else [target]  # TS's `./x.js` means ./x.ts
        candidates = [target] + [s + ext for s in stems for ext in _JS_SUFFIXES]
        yield resolver.first_existing(candidates + [f"{target}/index{ext}" for ext in _JS_SUFFIXES])


def _c_deps(text: str, path: str, resolver: _Resolver) -> Iterator[int | None]:
    """Files named by `#include "x.h"`: next to the includer first, else any file whose path ends in it."""
    for match in _C_INCLUDE.finditer(text):
        name = match.group(1).strip()
        local = posixpath.normpath(posixpath.join(posixpath.dirname(path), name))
        if local in resolver.index:
            yield resolver.index[local]
            continue
        candidates = resolver.basenames.get(posixpath.basename(name), [])
        suffix_matches = [i for i in candidates if resolver.paths[i] == name or resolver.paths[i].endswith("/" + name)]
        yield resolver.closest(suffix_matches, path)


_DEP_FINDERS: dict[str, Callable[[str, str, _Resolver], Iterator[int | None]]] = {
    "python": _python_deps,
    **{language: _js_deps for language in _JS_LANGUAGES},
    **{language: _c_deps for language in _C_LANGUAGES},
}


def dependency_graph(docs: Sequence[Document]) -> list[list[int]]:
    """For each document, the indices of the repository files it imports (sorted; itself excluded).

    Languages without a resolver here (Go, Java, Rust, ...) get no edges: `order_files` groups them by directory.
    """
    resolver = _Resolver([doc.path for doc in docs])
    graph: list[list[int]] = []
    for i, doc in enumerate(docs):
        finder = _DEP_FINDERS.get(doc.language)
        found = set(finder(doc.text, doc.path, resolver)) if finder else set()
        graph.append(sorted(j for j in found if j is not None and j != i))
    return graph


def _directory_order(paths: Sequence[str], rng: random.Random, randomness: float) -> list[int]:
    """Indices in directory-tree order (siblings together); with probability `randomness` a directory's files are
    shuffled, since file names within a directory say nothing about which belongs first."""
    by_dir: dict[str, list[int]] = defaultdict(list)
    for i, path in enumerate(paths):
        by_dir[posixpath.dirname(path)].append(i)
    order: list[int] = []
    for directory in sorted(by_dir, key=lambda d: d.split("/")):
        group = sorted(by_dir[directory], key=lambda i: (paths[i], i))
        if randomness and rng.random() < randomness:
            rng.shuffle(group)
        order.extend(group)
    return order


def _emit_with_dependencies(
    start: int, graph: list[list[int]], seen: list[bool], visit_order: Callable[[int], list[int]]
) -> list[int]:
    """Iterative depth-first post-order from `start`: each file after the files it imports.

    A file is marked seen when first reached, so an import cycle is cut where it closes instead of looping, and
    every file is emitted exactly once.
    """
    out: list[int] = []
    seen[start] = True
    stack = [(start, iter(visit_order(start)))]
    while stack:
        node, pending = stack[-1]
        nxt = next((j for j in pending if not seen[j]), None)
        if nxt is None:
            stack.pop()
            out.append(node)
        else:
            seen[nxt] = True
            stack.append((nxt, iter(visit_order(nxt))))
    return out


def order_files(docs: list[Document], seed: int, randomness: float = 0.1) -> list[Document]:
    """The repository's files in a training order: dependencies before dependents, related files together.

    Walks the directory tree (siblings together) and, before each file, emits the files it imports that are not out
    yet (the nearest directory first), so a chain a -> b -> c comes out c, b, a. `randomness` in [0, 1] is the
    probability of each random choice: shuffling a directory's files, shuffling a file's imports, and jumping to a
    random not-yet-emitted file instead of the next one in tree order. Deterministic for a seed; with
    `randomness=0` the seed does not matter. Always a permutation of `docs`, import cycles included.
    """
    if not 0.0 <= randomness <= 1.0:
        raise ValueError(f"randomness must be between 0 and 1, got {randomness}")
    rng = random.Random(seed)
    paths = [doc.path for doc in docs]
    graph = dependency_graph(docs)

    def visit_order(i: int) -> list[int]:
        deps = sorted(graph[i], key=lambda j: (-_shared_dirs(paths[i], paths[j]), paths[j], j))
        if randomness and len(deps) > 1 and rng.random() < randomness:
            rng.shuffle(deps)
        return deps

    base = _directory_order(paths, rng, randomness)
    seen = [False] * len(docs)
    order: list[int] = []
    pos = 0
    while pos < len(base):
        if seen[base[pos]]:
            pos += 1
            continue
        start = base[pos]
        if randomness and rng.random() < randomness:
            jump = base[rng.randrange(pos, len(base))]
            start = start if seen[jump] else jump
        order.extend(_emit_with_dependencies(start, graph, seen, visit_order))
    return [docs[i] for i in order]


# ---------------------------------------------------------------------------------------------------------------
# Retrieval
# ---------------------------------------------------------------------------------------------------------------

_IDENTIFIER = re.compile(r"[^\W\d]\w*")
_WORD_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+")


def split_identifier(identifier: str) -> list[str]:
    """Lower-case search terms of one identifier: its camelCase/snake_case parts, plus the whole name, so
    `getUserName` matches `user_name` and, more strongly, itself. Terms under two characters are noise."""
    if identifier.isalpha() and identifier.islower():  # the common case, and the hot path when indexing
        return [identifier] if len(identifier) > 1 else []
    chunks = identifier.split("_")
    parts = [p.lower() for chunk in chunks for p in (_WORD_PART.findall(chunk) if chunk.isascii() else [chunk])]
    terms = [p for p in parts if len(p) > 1]
    whole = identifier.lower()
    if len(whole) > 1 and whole not in terms:
        terms.append(whole)
    return terms


@dataclass(frozen=True)
class Snippet:
    """A run of lines from one repository file; `start_line` is 0-based, `score` the BM25 score for the query."""

    path: str
    text: str
    score: float
    start_line: int = 0


class _TermIds(dict):
    """identifier -> its term ids, growing the vocabulary on first sight (a dict so the lookup stays in C)."""

    def __init__(self, vocab: dict[str, int]) -> None:
        super().__init__()
        self.vocab = vocab

    def __missing__(self, identifier: str) -> list[int]:
        ids = [self.vocab.setdefault(term, len(self.vocab)) for term in split_identifier(identifier)]
        self[identifier] = ids
        return ids


class RepoRetriever:
    """BM25 over code snippets of one repository: windows of `window` lines every `stride` lines per file.

    Terms are identifiers (keywords included) split on camelCase/snake_case. Overlapping windows keep a relevant
    block whole somewhere; `retrieve` never returns two overlapping windows of the same file. Each file is
    tokenized once, in blocks of gcd(window, stride) lines that the windows share.
    """

    def __init__(self, docs: Sequence[Document], window: int = 30, stride: int = 15) -> None:
        if window < 1 or not 1 <= stride <= window:
            raise ValueError(f"need window >= stride >= 1, got window={window}, stride={stride}")
        self._vocab: dict[str, int] = {}
        self._term_ids = _TermIds(self._vocab)
        self._snippets: list[tuple[int, int, int]] = []  # (doc index, first line, end line)
        self._lines: list[list[str]] = []
        self._paths: list[str] = []
        self._ranges: dict[str, list[tuple[int, int]]] = defaultdict(list)  # path -> snippet index ranges
        corpus: list[list[int]] = []
        for doc in docs:
            corpus.extend(self._add_document(doc, window, stride))
        self._bm25 = bm25s.BM25(csc_backend="scipy")
        if corpus:
            self._bm25.index((corpus, dict(self._vocab)), show_progress=False)

    def __len__(self) -> int:
        return len(self._snippets)

    def _ids(self, text: str) -> list[int]:
        """Term ids of `text` for indexing (new terms join the vocabulary)."""
        return list(chain.from_iterable(map(self._term_ids.__getitem__, _IDENTIFIER.findall(text))))

    def _query_ids(self, text: str) -> list[int]:
        """Distinct known term ids of a query, in first-seen order; terms the repository lacks cannot score."""
        terms = (t for identifier in _IDENTIFIER.findall(text) for t in split_identifier(identifier))
        return list(dict.fromkeys(self._vocab[t] for t in terms if t in self._vocab))

    def _add_document(self, doc: Document, window: int, stride: int) -> Iterator[list[int]]:
        """Index one file's windows; yields the term ids of each window that has any."""
        doc_index = len(self._paths)
        self._paths.append(doc.path)
        lines = doc.text.splitlines(keepends=True)
        self._lines.append(lines)
        block = math.gcd(window, stride)
        block_ids = [self._ids("".join(lines[i : i + block])) for i in range(0, len(lines), block)]
        first = len(self._snippets)
        for start in range(0, len(lines), stride):
            end = min(start + window, len(lines))
            ids = list(chain.from_iterable(block_ids[start // block : -(-end // block)]))
            if ids:
                self._snippets.append((doc_index, start, end))
                yield ids
            if end == len(lines):
                break
        if len(self._snippets) > first:
            self._ranges[doc.path].append((first, len(self._snippets)))

    def retrieve(self, query: str, exclude_path: str, k: int) -> list[Snippet]:
        """The `k` best-scoring snippets for `query` from files other than `exclude_path`, best first.

        Ties go to the earlier snippet (input file order, then line), so results are deterministic; snippets that
        share no term with the query are never returned.
        """
        terms = self._query_ids(query)
        if k <= 0 or not terms or not self._snippets:
            return []
        scores = np.asarray(self._bm25.get_scores_from_ids(terms), dtype=np.float64)
        for first, end in self._ranges.get(exclude_path, ()):
            scores[first:end] = 0.0
        candidates = np.flatnonzero(scores > 0)
        shortlist = _best(candidates, scores, 4 * k + 16)  # room for windows skipped as overlapping
        picked = self._pick(shortlist, scores, k)
        if len(picked) < k and len(shortlist) < len(candidates):
            picked = self._pick(_best(candidates, scores, len(candidates)), scores, k)
        return picked

    def _pick(self, ranked: np.ndarray, scores: np.ndarray, k: int) -> list[Snippet]:
        """The first `k` of `ranked` that do not overlap a snippet already picked from the same file."""
        picked: list[Snippet] = []
        taken: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for index in ranked.tolist():
            doc_index, start, end = self._snippets[index]
            if any(start < e and s < end for s, e in taken[doc_index]):
                continue
            taken[doc_index].append((start, end))
            text = "".join(self._lines[doc_index][start:end])
            picked.append(Snippet(self._paths[doc_index], text, float(scores[index]), start))
            if len(picked) == k:
                break
        return picked


def _best(candidates: np.ndarray, scores: np.ndarray, limit: int) -> np.ndarray:
    """At least the `limit` best of `candidates` (all ties at the cut kept), by score, then earlier index.

    Partitioning first keeps a query fast when most snippets share some term with it; keeping the ties makes the
    result independent of how the partition breaks them.
    """
    if len(candidates) > limit:
        cut = len(candidates) - limit
        threshold = np.partition(scores[candidates], cut)[cut]
        candidates = candidates[scores[candidates] >= threshold]
    return candidates[np.lexsort((candidates, -scores[candidates]))]


# ---------------------------------------------------------------------------------------------------------------
# Context in front of a sample
# ---------------------------------------------------------------------------------------------------------------

SegmentKind = Literal["repo_name", "file_sep", "text"]
Segment = tuple[SegmentKind, str]


@dataclass(frozen=True)
class ContextSample:
    """A sample plus the repository context to show in front of it; the sample itself is untouched.

    `context`: segments that stand before the whole FIM block (before the family's prefix token; before the text
    of a plain sample). "repo_name"/"file_sep" mean the family's special token (their text is always empty);
    "text" is plain text. `lead`: plain text that starts the prefix, after the prefix token (and, in SPM order,
    after the middle token), before any aiXcoder header: StarCoder2's current-file `path\\n`, or the commented
    snippets of families without repository tokens. Neither part belongs in the loss: it is retrieved, not written.
    """

    sample: Sample
    context: tuple[Segment, ...] = ()
    lead: str = ""

    @property
    def context_chars(self) -> int:
        """Characters of text added in front of the sample (special tokens not counted)."""
        return sum(len(text) for _, text in self.context) + len(self.lead)


@dataclass(frozen=True)
class _RepoLayout:
    """How a family with repository tokens writes them (sources in the module docstring)."""

    newline_after_repo_name: bool
    newline_after_file: bool
    path_in_prefix: bool


_REPO_LAYOUTS = {
    "starcoder": _RepoLayout(newline_after_repo_name=False, newline_after_file=False, path_in_prefix=True),
    "qwen": _RepoLayout(newline_after_repo_name=True, newline_after_file=True, path_in_prefix=False),
}


def _repo_layout(family: str | None) -> _RepoLayout | None:
    """The family's repository layout; Qwen's for a family that has the tokens but no entry here; None: comments."""
    if family in _REPO_LAYOUTS:
        return _REPO_LAYOUTS[family]
    spec = FAMILIES.get(family) if family else None
    return _REPO_LAYOUTS["qwen"] if spec and spec.repo_name and spec.file_sep else None


def context_query(sample: Sample, chars: int = 2000) -> str:
    """The retrieval query: the code around the gap, never the middle.

    FIM: the prefix's last characters and the suffix's first, the suffix getting at most a quarter unless the
    prefix is shorter. Plain: the text's first characters (a file's imports say what it uses).
    """
    if sample.mode != "fim":
        return sample.text[:chars]
    suffix_part = min(len(sample.suffix), chars // 4)
    prefix = sample.prefix[max(0, len(sample.prefix) - (chars - suffix_part)) :] if chars > suffix_part else ""
    return prefix + "\n" + sample.suffix[: chars - len(prefix)]


def _fit(blocks: list[str], budget: int) -> list[int]:
    """Indices of the blocks kept, in rank order: each block that still fits whole (a partial snippet misleads)."""
    kept: list[int] = []
    for i, block in enumerate(blocks):
        if len(block) <= budget:
            kept.append(i)
            budget -= len(block)
    return kept


def _repo_context(
    path: str, snippets: list[Snippet], layout: _RepoLayout, repo_name: str, budget: int
) -> tuple[tuple[Segment, ...], str]:
    """Repository-token layout: `[repo_name name] (file_sep path\\ncode)* file_sep` + the current file's path."""
    head: list[Segment] = []
    if repo_name:
        head = [("repo_name", ""), ("text", repo_name + ("\n" if layout.newline_after_repo_name else ""))]
    own = f"{path}\n"
    end = "\n" if layout.newline_after_file else ""
    blocks = [f"{s.path}\n{s.text}{end}" for s in snippets]
    kept = _fit(blocks, budget - len(own) - sum(len(text) for _, text in head))
    if not kept:
        return (), ""
    body: list[Segment] = []
    for i in reversed(kept):  # the best snippet last, next to the code it informs
        body += [("file_sep", ""), ("text", blocks[i])]
    if layout.path_in_prefix:
        return (*head, *body, ("file_sep", "")), own
    return (*head, *body, ("file_sep", ""), ("text", own)), ""


def _comment_context(language: str, snippets: list[Snippet], budget: int) -> str:
    """Comment layout: per snippet a `Path: {path}` comment line, then its lines commented out, best last."""
    blocks = [
        comment_line(language, f"Path: {s.path}")
        + "".join(comment_line(language, line) for line in s.text.splitlines())
        for s in snippets
    ]
    return "".join(blocks[i] for i in reversed(_fit(blocks, budget)))


def neighbor_snippets(
    ordered: Sequence[Document], n: int, chars: int, allowed: set[str] | None = None
) -> dict[str, list[Snippet]]:
    """For each file, the `n` files just before it in `ordered` (an `order_files` order), the nearest first.

    This is how repository-level concatenation shows a file its dependencies and directory neighbours, without
    letting packed documents attend to each other: the neighbours become context in front of the sample. Each
    neighbour is its first `chars` characters cut at a line end (imports and signatures come first). Only paths in
    `allowed` (e.g. the training files) are shown, so held-out files never leak into training samples.
    """
    out: dict[str, list[Snippet]] = {}
    previous: deque[Snippet] = deque(maxlen=n)
    for doc in ordered:
        out[doc.path] = list(reversed(previous))
        if allowed is None or doc.path in allowed:
            head = doc.text if len(doc.text) <= chars else doc.text[: doc.text.rfind("\n", 0, chars) + 1]
            if head and n > 0:
                previous.append(Snippet(doc.path, head, 0.0))
    return out


def with_context(
    sample: Sample, snippets: Sequence[Snippet], *, budget_chars: int, family: str | None, repo_name: str = ""
) -> ContextSample:
    """`sample` with `snippets` (best first; the best ends up next to the code) in front of it, in `family`'s layout.

    `budget_chars` bounds `context_chars` (all added text: repository name, paths, snippets); snippets that do not
    fit whole are skipped. Empty repository name: no `repo_name` token (StarCoder2 trained half its data without
    metadata).
    """
    if not sample.path or budget_chars <= 0 or not snippets:
        return ContextSample(sample)
    snippets = [s for s in snippets if s.path != sample.path]
    layout = _repo_layout(family)
    if layout is None:
        return ContextSample(sample, lead=_comment_context(sample.language, snippets, budget_chars))
    context, lead = _repo_context(sample.path, snippets, layout, repo_name, budget_chars)
    return ContextSample(sample, context, lead)


def with_retrieved_context(
    sample: Sample,
    retriever: RepoRetriever,
    *,
    budget_chars: int,
    k: int,
    family: str | None,
    repo_name: str = "",
    query_chars: int = 2000,
    extra: Sequence[Snippet] = (),
) -> ContextSample:
    """`sample` with up to `k` retrieved snippets of other files in front of it (then `extra`), in `family`'s layout.

    The query is the code around the gap (`context_query`), and the sample's own file is excluded entirely, so the
    middle cannot leak. A sample without a path gets no context: its own file could not be excluded.
    """
    if not sample.path or budget_chars <= 0:
        return ContextSample(sample)
    snippets = retriever.retrieve(context_query(sample, query_chars), exclude_path=sample.path, k=k)
    return with_context(sample, [*snippets, *extra], budget_chars=budget_chars, family=family, repo_name=repo_name)
