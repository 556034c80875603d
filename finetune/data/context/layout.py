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

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from finetune.data.context.retrieval import RepoRetriever, Snippet
from finetune.data.ingest.languages import comment_line
from finetune.data.tokenize.families import FAMILIES, RepoLayout
from finetune.data.types import Document, Sample

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


def _repo_layout(family: str | None) -> RepoLayout | None:
    """The family's repository layout; None: the context goes in as comments."""
    spec = FAMILIES.get(family) if family else None
    return spec.repo_layout if spec else None


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
    path: str, snippets: list[Snippet], layout: RepoLayout, repo_name: str, budget: int
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
