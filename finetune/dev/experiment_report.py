"""The experiment's statistics and outputs: bootstrap intervals over items, seed pooling, Markdown tables, a chart.

Items are the unit of resampling: the question is whether the model completes this repository's held-out code
better, and the items are the sample of that code we drew. Seeds are pooled per item (its mean score over the
seeds of an arm), so an interval says how much the item sample moves the pooled mean; how much training seeds move
it shows in the per-seed table, not in the interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finetune.evaluate.report import save_png

METRICS = ("exact_match", "edit_similarity")
METRIC_NAMES = {"exact_match": "exact match", "edit_similarity": "edit similarity"}
MIN_ITEMS = 5  # below this a percentile bootstrap interval is not worth printing (with 1 item it has zero width)


@dataclass(frozen=True)
class Interval:
    """A mean and its percentile bootstrap interval."""

    mean: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def snapped(self) -> Interval:
        """Rounding residue of sums that cancel (1e-17) is zero, so it neither prints as -0.0 nor excludes 0."""
        return Interval(*(0.0 if abs(v) < 1e-12 else v for v in (self.mean, self.low, self.high)))


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, *, resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> Interval:
    """The mean of `values` and the percentile interval of means over `resamples` resamples with replacement.

    For a paired difference pass the per-item differences: resampling them is resampling the items of both arms
    together. The same seed gives the same interval.
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    mean = float(data.mean())
    if np.ptp(data) == 0:  # every resample is the sample itself; rounding in the sums must not widen it
        return Interval(mean, mean, mean)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(mean, float(low), float(high)).snapped()


def pool_seeds(per_seed: Sequence[np.ndarray]) -> np.ndarray:
    """Per-item mean over seeds: one score per item for an arm trained with several seeds."""
    return np.mean(np.stack([np.asarray(s, dtype=float) for s in per_seed]), axis=0)


def category_intervals(
    categories: Sequence[str], scores: dict[str, np.ndarray], *, resamples: int, seed: int
) -> dict[str, dict]:
    """{category or "overall": {"n", metric: Interval}} for per-item `scores` (metric -> array over items)."""
    cats = np.asarray(categories)
    out: dict[str, dict] = {}
    for name in [*dict.fromkeys(categories), "overall"]:
        mask = np.ones(len(cats), bool) if name == "overall" else cats == name
        out[name] = {"n": int(mask.sum())}
        for metric in METRICS:
            out[name][metric] = bootstrap_ci(scores[metric][mask], resamples=resamples, seed=seed)
    return out


# ------------------------------------------------------------------------------------------------ Markdown


def _pct(interval: Interval, n: int, signed: bool = False) -> str:
    """`mean [low, high]` in %; a category with too few items gets its mean and a dagger, no interval."""
    sign = "+" if signed else ""
    if n < MIN_ITEMS:
        return f"{100 * interval.mean:{sign}.1f} †"
    text = f"{100 * interval.mean:{sign}.1f} [{100 * interval.low:{sign}.1f}, {100 * interval.high:{sign}.1f}]"
    return f"**{text}**" if signed and interval.excludes_zero() else text


def score_table(arms: dict[str, dict[str, dict]], metric: str, signed: bool = False) -> list[str]:
    """Rows: categories and overall; columns: arms; cells: mean [95% interval] in % (signed: bold when the interval
    excludes zero)."""
    labels = list(arms)
    first = arms[labels[0]]
    lines = ["| category | n | " + " | ".join(labels) + " |", "|---|---:|" + "---:|" * len(labels)]
    for category, cell in first.items():
        name = f"**{category}**" if category == "overall" else category
        values = [_pct(arms[label][category][metric], cell["n"], signed=signed) for label in labels]
        lines.append(f"| {name} | {cell['n']} | " + " | ".join(values) + " |")
    return lines


def difference_table(differences: dict[str, dict[str, dict]], metric: str) -> list[str]:
    """Rows: categories; columns: "A - B" comparisons; a bold cell is an interval that excludes zero."""
    return score_table(differences, metric, signed=True)



def per_seed_table(per_seed: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Overall scores of every trained model, one row per arm and seed."""
    lines = ["| arm | seed | exact match | edit similarity |", "|---|---:|---:|---:|"]
    for arm, seeds in per_seed.items():
        for seed, score in seeds.items():
            lines.append(
                f"| {arm} | {seed} | {100 * score['exact_match']:.1f} | {100 * score['edit_similarity']:.1f} |"
            )
    return lines


def results_markdown(
    experiments: Sequence[dict],
    arms: dict[str, dict[str, dict]],
    differences: dict[str, dict[str, dict]],
    per_seed: dict[str, dict[str, dict[str, float]]],
    header: Sequence[str],
) -> str:
    """The whole results.md: settings, then per experiment the scores and the paired differences, then seeds."""
    lines = ["# Does fine-tuning help? (measured)", "", *header, ""]
    for exp in experiments:
        lines += [f"## ({exp['key']}) {exp['title']}", ""]
        for metric in METRICS:
            lines += [f"{METRIC_NAMES[metric].capitalize()} (%), mean [95% bootstrap interval]:", ""]
            lines += score_table({arm: arms[arm] for arm in exp["arms"]}, metric) + [""]
        for metric in METRICS:
            lines += [
                f"Paired difference in {METRIC_NAMES[metric]} (percentage points); bold = interval excludes 0:",
                "",
            ]
            lines += difference_table({name: differences[name] for name in exp["differences"]}, metric) + [""]
    lines += [f"† fewer than {MIN_ITEMS} items: the mean only, no interval.", ""]
    lines += ["## Every trained model (overall, %)", "", *per_seed_table(per_seed), ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ the chart


def plot_results(path: Path, experiments: Sequence[dict], arms: dict[str, dict[str, dict]]) -> Path:
    """Bars per category with 95% interval error bars: one row per experiment, one column per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(arms.values()))
    categories = list(first)
    ticks = [f"{c} ({first[c]['n']})" for c in categories]
    fig, axes = plt.subplots(
        len(experiments),
        len(METRICS),
        figsize=(max(10, 1.1 * len(categories) + 4), 4 * len(experiments)),
        squeeze=False,
    )
    for row, exp in zip(axes, experiments, strict=True):
        width = 0.8 / len(exp["arms"])
        for axis, metric in zip(row, METRICS, strict=True):
            for i, arm in enumerate(exp["arms"]):
                cells = [arms[arm][c][metric] for c in categories]
                means = np.array([100 * c.mean for c in cells])
                errors = np.array([[100 * (c.mean - c.low) for c in cells], [100 * (c.high - c.mean) for c in cells]])
                x = np.arange(len(categories)) + (i - (len(exp["arms"]) - 1) / 2) * width
                axis.bar(x, means, width, yerr=errors, capsize=2, label=arm)
            axis.set_title(f"({exp['key']}) {METRIC_NAMES[metric]}")
            axis.set_ylabel("%")
            axis.set_ylim(0, max(1.0, axis.get_ylim()[1]))  # small scores stay readable
            axis.set_xticks(np.arange(len(categories)))
            axis.set_xticklabels(ticks, rotation=35, ha="right", fontsize=8)
            axis.grid(axis="y", alpha=0.3)
        row[0].legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)
