"""Repository files in the order repository-level pretraining lays them out: related files together, a file's
dependencies before it (imports resolved for Python, JS/TS and C/C++; every language grouped by directory);
`neighbor_snippets` (in layout.py) turns that order into context: the files just before a file.
"""

from __future__ import annotations

import posixpath
import random
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence

from finetune.data.types import Document

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
