"""What one `finetune eval` is asked to do (`EvalOptions`), and the pieces both kinds of evaluation share."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalOptions:
    """One evaluation: what to score (held-out FIM items of `repo`, or a `benchmark` file), with which model(s)."""

    out: str
    repo: str | None = None
    benchmark: str | None = None
    model: str | None = None
    adapter: str | None = None
    family: str = "auto"
    dtype: str = "auto"
    compare: str | None = None
    split: str | None = None
    oracle: bool = False
    plot: bool = False
    categories: str | None = None
    per_category: int = 20
    context_chars: int = 4000
    batch_size: int = 8
    limit: int | None = None
    truncate: str = "auto"
    timeout: float = 10.0
    memory_mb: int = 1024
    isolation: str = "auto"
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    early_stop: bool = True


def make_console():
    from rich.console import Console

    return Console(highlight=False)


def models_to_run(options: EvalOptions) -> list[tuple[str | None, str | None, str | None]]:
    """(model, adapter, label) for the model under test and, with --compare, the base."""
    runs: list[tuple[str | None, str | None, str | None]] = [(options.model, options.adapter, None)]
    if options.compare:
        runs.append((options.compare, None, None))
    return runs


def unique_label(completer_label: str, taken: set[str]) -> str:
    label = completer_label
    while label in taken:
        label += "'"
    taken.add(label)
    return label


def settings_of(options: EvalOptions) -> dict:
    keys = ("max_new_tokens", "temperature", "top_p", "top_k", "seed", "batch_size", "per_category", "context_chars")
    return {k: getattr(options, k) for k in keys if hasattr(options, k)}
