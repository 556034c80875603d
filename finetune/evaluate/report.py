"""Evaluation results as files people and programs read: results.json, report.md, and a PNG bar chart.

Every file is written to a temporary name in the output folder and renamed when whole.
"""

from __future__ import annotations

from pathlib import Path

from finetune.errors import UserError
from finetune.io import atomic_file

_ENDED = {"stop_token": "a stop token", "rule": "their unit's end", "limit": "--max-new-tokens"}


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def score_columns(runs: list[dict], categories: list[str]) -> tuple[list[str], list[list[str]]]:
    """The header and rows of the per-category score table: EM and ES of every run side by side, then each run's
    middle loss when the eval computed it."""
    labels = [run["label"] for run in runs]
    with_loss = [run for run in runs if any("middle_loss" in s for s in run["scores"].values())]
    head = ["category", "n"] + [f"EM {label}" for label in labels] + [f"ES {label}" for label in labels]
    head += [f"loss {run['label']}" for run in with_loss]
    rows = []
    for category in [*categories, "overall"]:
        scores = [run["scores"].get(category) for run in runs]
        if not any(scores):
            continue
        n = next(s["n"] for s in scores if s)
        cells = [_pct(s["exact_match"]) if s else "" for s in scores]
        cells += [_pct(s["edit_similarity"]) if s else "" for s in scores]
        for run in with_loss:
            loss = (run["scores"].get(category) or {}).get("middle_loss")
            cells.append(f"{loss:.3f}" if loss is not None else "")
        rows.append([category, str(n), *cells])
    return head, rows


def fim_markdown(runs: list[dict], categories: list[str], notes: list[str]) -> str:
    """A Markdown table: one row per category, exact match and edit similarity for each run side by side."""
    head, rows = score_columns(runs, categories)
    lines = ["# FIM evaluation", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        name = f"**{row[0]}**" if row[0] == "overall" else row[0]
        lines.append("| " + " | ".join([name, *row[1:]]) + " |")
    lines += [
        "",
        "EM = exact match (%), ES = edit similarity (%, rapidfuzz), after truncation to the syntactic unit; loss = mean "
        "negative log-likelihood of the reference middle and its end token (nats per token, lower is better).",
        "",
    ]
    for run in runs:
        gen = run.get("generation") or {}
        if gen:
            ended = ", ".join(f"{n} by {_ENDED.get(how, how)}" for how, n in (gen.get("ended") or {}).items())
            lines.append(
                f"- {run['label']}: {gen.get('new_tokens', 0)} tokens generated in {gen.get('seconds', 0)}s "
                f"({gen.get('tokens_per_second', 0)} tokens/s, batch size {gen.get('batch_size', '?')})"
                + (f"; completions ended {ended}" if ended else "")
            )
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def benchmark_markdown(runs: list[dict], benchmark: str, notes: list[str]) -> str:
    lines = [f"# Infilling benchmark: {benchmark}", "", "| model | tasks | passed | pass@1 (%) |", "|---|---|---|---|"]
    for run in runs:
        lines.append(f"| {run['label']} | {run['total']} | {run['passed']} | {_pct(run['pass@1'])} |")
    lines.append("")
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def plot_scores(path: Path, runs: list[dict], categories: list[str]) -> Path:
    """A grouped bar chart of exact match and edit similarity per category, one colour per run."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'finetune[plot]' (or leave out --plot)") from None
    shown = [c for c in [*categories, "overall"] if any(c in run["scores"] for run in runs)]
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.8 * len(shown) + 2), 7), sharex=True)
    width = 0.8 / max(1, len(runs))
    for axis, metric, title in zip(axes, ("exact_match", "edit_similarity"), ("exact match", "edit similarity"), strict=True):
        for r, run in enumerate(runs):
            values = [100 * run["scores"].get(c, {}).get(metric, 0.0) for c in shown]
            axis.bar([i + r * width for i in range(len(shown))], values, width, label=run["label"])
        axis.set_ylabel(f"{title} (%)")
        axis.set_ylim(0, 100)
        axis.grid(axis="y", alpha=0.3)
    axes[0].legend()
    axes[1].set_xticks([i + width * (len(runs) - 1) / 2 for i in range(len(shown))])
    axes[1].set_xticklabels(shown, rotation=35, ha="right")
    fig.tight_layout()
    return save_png(fig, path)


def save_png(fig, path: Path) -> Path:
    """Write a matplotlib figure as a PNG atomically (a killed run leaves no half image) and free it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_file(path, "wb") as handle:
            fig.savefig(handle, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path
