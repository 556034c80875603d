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

METRICS = ("exact_match", "edit_similarity", "middle_loss")
METRIC_NAMES = {"exact_match": "exact match", "edit_similarity": "edit similarity", "middle_loss": "middle loss"}
# How a metric prints: (scale, decimals, unit of a score, unit of a difference); the loss is lower-is-better
METRIC_FORMATS = {
    "exact_match": (100.0, 1, "%", "percentage points"),
    "edit_similarity": (100.0, 1, "%", "percentage points"),
    "middle_loss": (1.0, 3, "nats/token, lower is better", "nats/token; negative = the first arm is better"),
}
LOWER_IS_BETTER = frozenset({"middle_loss"})
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
        for metric, values in scores.items():
            out[name][metric] = bootstrap_ci(values[mask], resamples=resamples, seed=seed)
    return out


# ------------------------------------------------------------------------------------------------ Markdown


def _cell(interval: Interval, n: int, metric: str, signed: bool = False) -> str:
    """`mean [low, high]` in the metric's unit; a category with too few items gets its mean and a dagger only."""
    scale, decimals, _, _ = METRIC_FORMATS[metric]
    spec = f"{'+' if signed else ''}.{decimals}f"
    if n < MIN_ITEMS:
        return f"{scale * interval.mean:{spec}} †"
    text = f"{scale * interval.mean:{spec}} [{scale * interval.low:{spec}}, {scale * interval.high:{spec}}]"
    return f"**{text}**" if signed and interval.excludes_zero() else text


def score_table(arms: dict[str, dict[str, dict]], metric: str, signed: bool = False) -> list[str]:
    """Rows: categories and overall; columns: arms; cells: mean [95% interval] (signed: bold when the interval
    excludes zero)."""
    labels = list(arms)
    first = arms[labels[0]]
    lines = ["| category | n | " + " | ".join(labels) + " |", "|---|---:|" + "---:|" * len(labels)]
    for category, cell in first.items():
        name = f"**{category}**" if category == "overall" else category
        values = [_cell(arms[label][category][metric], cell["n"], metric, signed=signed) for label in labels]
        lines.append(f"| {name} | {cell['n']} | " + " | ".join(values) + " |")
    return lines


def difference_table(differences: dict[str, dict[str, dict]], metric: str) -> list[str]:
    """Rows: categories; columns: "A - B" comparisons; a bold cell is an interval that excludes zero."""
    return score_table(differences, metric, signed=True)


def verdict(name: str, metric: str, interval: Interval) -> str:
    """One sentence on an overall paired difference "A - B": better, worse, or no clear difference (95%)."""
    first, second = name.split(" - ")
    scale, decimals, _, unit = METRIC_FORMATS[metric]
    shown = f"{scale * interval.mean:+.{decimals}f} [{scale * interval.low:+.{decimals}f}, {scale * interval.high:+.{decimals}f}]"
    if not interval.excludes_zero():
        outcome = "no clear difference"
    else:
        better = (interval.high < 0) if metric in LOWER_IS_BETTER else (interval.low > 0)
        outcome = f"{first} is **better**" if better else f"{first} is **worse**"
    return f"- {first} vs {second}, {METRIC_NAMES[metric]}: {outcome} ({shown} {unit.split(';')[0]})"


def per_seed_table(per_seed: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Overall scores of every trained model, one row per arm and seed."""
    lines = ["| arm | seed | exact match (%) | edit similarity (%) | middle loss |", "|---|---:|---:|---:|---:|"]
    for arm, seeds in per_seed.items():
        for seed, score in seeds.items():
            em, es, loss = (100 * score["exact_match"], 100 * score["edit_similarity"], score["middle_loss"])
            lines.append(f"| {arm} | {seed} | {em:.1f} | {es:.1f} | {loss:.3f} |")
    return lines


def results_markdown(
    experiments: Sequence[dict],
    arms: dict[str, dict[str, dict]],
    differences: dict[str, dict[str, dict]],
    per_seed: dict[str, dict[str, dict[str, float]]],
    header: Sequence[str],
) -> str:
    """The whole results.md: settings, then per experiment the scores and the paired differences, then seeds."""
    lines = ["# Does fine-tuning help? (measured)", "", *header, "", "## In short (overall, 95% intervals)", ""]
    for exp in experiments:
        lines += [verdict(name, metric, differences[name]["overall"][metric]) for name in exp["differences"] for metric in METRICS]
    lines.append("")
    for exp in experiments:
        lines += [f"## ({exp['key']}) {exp['title']}", ""]
        for metric in METRICS:
            unit = METRIC_FORMATS[metric][2]
            lines += [f"{METRIC_NAMES[metric].capitalize()} ({unit}), mean [95% bootstrap interval]:", ""]
            lines += score_table({arm: arms[arm] for arm in exp["arms"]}, metric) + [""]
        for metric in METRICS:
            unit = METRIC_FORMATS[metric][3]
            lines += [f"Paired difference in {METRIC_NAMES[metric]} ({unit}); bold = interval excludes 0:", ""]
            lines += difference_table({name: differences[name] for name in exp["differences"]}, metric) + [""]
    lines += [f"† fewer than {MIN_ITEMS} items: the mean only, no interval.", ""]
    lines += ["## Every trained model (overall)", "", *per_seed_table(per_seed), ""]
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
                scale = METRIC_FORMATS[metric][0]
                cells = [arms[arm][c][metric] for c in categories]
                means = np.array([scale * c.mean for c in cells])
                errors = np.array([[scale * (c.mean - c.low) for c in cells], [scale * (c.high - c.mean) for c in cells]])
                x = np.arange(len(categories)) + (i - (len(exp["arms"]) - 1) / 2) * width
                axis.bar(x, means, width, yerr=errors, capsize=2, label=arm)
            axis.set_title(f"({exp['key']}) {METRIC_NAMES[metric]}")
            axis.set_ylabel(METRIC_FORMATS[metric][2].split(",")[0])
            axis.set_ylim(0, max(1.0, axis.get_ylim()[1]))  # small scores stay readable
            axis.set_xticks(np.arange(len(categories)))
            axis.set_xticklabels(ticks, rotation=35, ha="right", fontsize=8)
            axis.grid(axis="y", alpha=0.3)
        row[0].legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)
