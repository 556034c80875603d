"""The proof-of-value experiment: does fine-tuning on a repository improve completion of its held-out code?

`python -m finetune.dev.experiment --out runs/experiment [--model data/tiny-coder] [--seeds 3] [--steps N] [--quick]`

Trains each arm of `recipes/experiments/` on a repository the base model never saw (default: the standard
library's asyncio package) and scores the base model and every trained model on the same held-out FIM items:
(a) base vs LoRA vs full fine-tuning, (b) structured vs random FIM. One fixed set of files (a hash of each path) is
held out of every run through the recipe's `exclude` patterns, because a run's own split.json follows its seed and
the seeds must not see each other's evaluation files. Outputs: results.json, results.md and results.png in --out.

Everything lands under --out and finished parts are skipped, so the experiment can be stopped and run in parts:
runs/<arm>-s<seed>/ (training outputs), eval/<model>/ (`finetune eval` outputs), split.json (the held-out files)
and settings.json (what a resumed run must match).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from finetune.errors import UserError

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "experiments"
DEFAULT_REPO = Path(sysconfig.get_paths()["stdlib"]) / "asyncio"
DEFAULT_MODEL = "data/tiny-coder"
HOLDOUT_SEED = 0  # the held-out files are the same for every arm, seed and resumed run
ARMS = ("lora", "full", "structured", "random")
EXPERIMENTS = (
    {
        "key": "a",
        "title": "Base vs LoRA vs full fine-tuning",
        "arms": ("base", "lora", "full"),
        "differences": ("lora - base", "full - base", "full - lora"),
    },
    {
        "key": "b",
        "title": "Structured vs random FIM (both LoRA)",
        "arms": ("base", "structured", "random"),
        "differences": ("structured - random", "structured - base", "random - base"),
    },
)
# --quick: a smoke run of the whole pipeline in about a minute on a tiny model; it measures nothing
QUICK_OVERRIDES = (
    "data.max_length=128",
    "training.batch_size=1",
    "training.gradient_accumulation_steps=1",
    "training.logging_steps=1",
)


@dataclass(frozen=True)
class Settings:
    """What the experiment runs; every field but `seeds` and `resamples` must match when a run is resumed."""

    model: str
    repo: str
    seeds: int = 3
    steps: int | None = None  # None = the recipes' training.max_steps
    quick: bool = False
    holdout: float = 0.2
    per_category: int = 20
    max_new_tokens: int = 128
    context_chars: int = 1500  # about 500 tokens: prompts as long as the training sequences (max_length 512)
    eval_batch_size: int = 8
    resamples: int = 2000
    arms: tuple[str, ...] = ARMS  # which arms to train; more can be added to a finished experiment later
    recipe_overrides: tuple[str, ...] = ()  # KEY=VALUE applied to every arm (a sweep point: learning rate, ...)

    def overrides(self) -> list[str]:
        steps = [f"training.max_steps={self.steps}"] if self.steps else []
        return [*(QUICK_OVERRIDES if self.quick else ()), *steps, *self.recipe_overrides]


def experiments_of(arms: Sequence[str]) -> list[dict]:
    """The experiments (and their differences) that the trained `arms` and the base can show."""
    have = {"base", *arms}
    shown = []
    for exp in EXPERIMENTS:
        differences = tuple(d for d in exp["differences"] if set(d.split(" - ")) <= have)
        if differences:
            shown.append({**exp, "arms": tuple(a for a in exp["arms"] if a in have), "differences": differences})
    return shown


def _say(message: str) -> None:
    print(message, flush=True)


def _yaml_string(value: str) -> str:
    """A path as an override value: JSON quoting is YAML too, so no path is read as a number or a mapping."""
    return json.dumps(value)


# ------------------------------------------------------------------------------------------------ held-out files


def held_out_files(out: Path, repo: str, fraction: float) -> list[str]:
    """The files no arm trains on: read from out/split.json, or written there on the first run.

    They are the `fraction` of the files whose paths hash lowest: exactly that share of a small repository (a hash
    threshold holds out 4 or 10 of 33 files by chance), and the same files for the same paths.
    """
    from finetune.data.ingest.walk import walk_repository
    from finetune.io import write_json_atomic

    path = out / "split.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))["eval_paths"]
    documents, _ = walk_repository(repo)
    paths = [doc.path for doc in documents]
    if len(paths) < 2:
        raise UserError(f"{repo} has {len(paths)} usable file(s): the experiment needs at least 2 (train and held out)")
    ranked = sorted(
        paths, key=lambda p: hashlib.sha256(f"{HOLDOUT_SEED}:{p}".encode("utf-8", "surrogatepass")).digest()
    )
    held = sorted(ranked[: min(len(paths) - 1, max(1, round(fraction * len(paths))))])
    write_json_atomic(path, {"seed": HOLDOUT_SEED, "eval_split": fraction, "eval_paths": held})
    return held


def exclude_patterns(paths: Sequence[str]) -> list[str]:
    """Gitignore patterns that match exactly these repository paths (anchored, wildcards escaped)."""
    return ["/" + re.sub(r"([\\*?\[\]])", r"\\\1", p) for p in paths]


def check_settings(out: Path, settings: Settings) -> None:
    """Record the settings in settings.json; once a run or an eval has finished, a resumed experiment must use the
    same ones, or its parts would not compare. Before that they may change (a mistyped --model is just fixed)."""
    from finetune.io import write_json_atomic

    path = out / "settings.json"
    fixed = {k: v for k, v in asdict(settings).items() if k not in ("seeds", "resamples", "arms")}
    fixed["recipe_overrides"] = list(settings.recipe_overrides)  # as JSON reads it back
    before = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    if before == fixed:
        return
    finished = [*out.glob("runs/*/summary.json"), *out.glob("eval/*/results.json")]
    if before is not None and finished:
        changed = [f"{k}={before.get(k)!r} (now {v!r})" for k, v in fixed.items() if before.get(k) != v]
        raise UserError(
            f"{out} holds an experiment run with other settings: {', '.join(changed)}; "
            "use the same options to resume it, or a new --out"
        )
    if not finished:
        (out / "split.json").unlink(missing_ok=True)  # it may have been chosen for another repository
    write_json_atomic(path, fixed)


# ------------------------------------------------------------------------------------------------ training


def train_arm(out: Path, settings: Settings, arm: str, seed: int, excluded: list[str], console) -> Path:
    """Train one arm with one seed through the toolkit, unless a finished run is already there."""
    from finetune.config.load import load_recipe
    from finetune.training.trainer import run

    run_dir = out / "runs" / f"{arm}-s{seed}"
    if (run_dir / "summary.json").is_file():
        _say(f"train {run_dir.name}: finished earlier, skipped")
        return run_dir
    overrides = [
        f"output_dir={_yaml_string(str(run_dir))}",
        f"seed={seed}",
        "overwrite=true",  # a run killed before it finished is started again
        f"model.name_or_path={_yaml_string(settings.model)}",
        f"data.sources.0.path={_yaml_string(settings.repo)}",
        f"data.sources.0.exclude={json.dumps(['__pycache__/', *excluded])}",
        *settings.overrides(),
    ]
    recipe = load_recipe(RECIPES / f"{arm}.yaml", overrides)
    _say(f"train {run_dir.name}: {recipe.method}, {recipe.training.max_steps} steps")
    run(recipe, console=console)
    return run_dir


def check_never_trained_on(run_dir: Path, excluded: list[str]) -> None:
    """A run must have excluded every held-out file, or its scores would measure memory, not generalisation."""
    from finetune.run import saved_recipe

    sources = (saved_recipe(run_dir).get("data") or {}).get("sources") or [{}]
    missing = set(excluded) - set(sources[0].get("exclude") or [])
    if missing:
        raise UserError(
            f"{run_dir} trained on {len(missing)} held-out file(s) (its recipe does not exclude them): "
            f"delete {run_dir} and run the experiment again"
        )


def training_record(run_dir: Path) -> dict:
    """Steps, losses, time and tokens seen of a finished run, from its summary.json and metrics.jsonl."""
    from finetune.training.callbacks import read_metrics

    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    seen = [r["tokens_seen"] for r in read_metrics(run_dir / "metrics.jsonl") if "tokens_seen" in r]
    keys = ("method", "steps", "first_loss", "last_loss", "train_seconds", "tokens_per_second")
    return {**{k: summary.get(k) for k in keys}, "tokens_seen": seen[-1] if seen else None}


# ------------------------------------------------------------------------------------------------ evaluation


def evaluate_model(out: Path, settings: Settings, name: str, run_dir: Path | None, family: str) -> Path:
    """Score the base model (run_dir None) or a trained run on the held-out items, unless already scored."""
    from finetune.evaluate.options import EvalOptions
    from finetune.evaluate.run import evaluate

    eval_dir = out / "eval" / name
    if (eval_dir / "predictions.jsonl").is_file() and (eval_dir / "results.json").is_file():
        _say(f"eval {name}: scored earlier, skipped")
        return eval_dir
    _say(f"eval {name}")
    options = EvalOptions(
        out=str(eval_dir),
        repo=settings.repo,
        model=settings.model if run_dir is None else None,
        adapter=str(run_dir) if run_dir is not None else None,
        family=family,
        split=str(out / "split.json"),
        per_category=settings.per_category,
        context_chars=settings.context_chars,
        batch_size=settings.eval_batch_size,
        max_new_tokens=settings.max_new_tokens,
        seed=0,
    )
    evaluate(options)
    return eval_dir


def item_scores(eval_dir: Path) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    """(item ids, categories, metric -> per-item scores) of one evaluation."""
    label = json.loads((eval_dir / "results.json").read_text(encoding="utf-8"))["runs"][0]["label"]
    rows = [
        json.loads(line) for line in (eval_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines() if line
    ]
    from finetune.dev.experiment_report import METRICS

    missing = [m for m in METRICS if any(f"{label}.{m}" not in row for row in rows)]
    if missing:
        raise UserError(
            f"{eval_dir} has no {', '.join(missing)} for every item (an older or cut-short eval): delete it and run again"
        )
    scores = {m: np.array([row[f"{label}.{m}"] for row in rows], dtype=float) for m in METRICS}
    return [row["id"] for row in rows], [row["category"] for row in rows], scores


# ------------------------------------------------------------------------------------------------ analysis


def analyse(out: Path, settings: Settings, evals: dict[str, dict[int | None, Path]], training: dict) -> dict:
    """Pool seeds, compute intervals and paired differences; write results.json, results.md, results.png."""
    from finetune.dev.experiment_report import (
        METRICS,
        category_intervals,
        plot_results,
        pool_seeds,
        results_markdown,
    )
    from finetune.io import write_json_atomic, write_text_atomic

    ids, categories, _ = item_scores(evals["base"][None])
    pooled: dict[str, dict[str, np.ndarray]] = {}
    per_seed: dict[str, dict[str, dict[str, float]]] = {}
    for arm, by_seed in evals.items():
        seeds: dict[int | None, dict[str, np.ndarray]] = {}
        for seed, eval_dir in by_seed.items():
            arm_ids, _, scores = item_scores(eval_dir)
            if arm_ids != ids:
                raise UserError(
                    f"{eval_dir} scored other items than {evals['base'][None]}: delete {out / 'eval'} and run again"
                )
            seeds[seed] = scores
        pooled[arm] = {m: pool_seeds([s[m] for s in seeds.values()]) for m in METRICS}
        if arm != "base":
            per_seed[arm] = {str(seed): {m: float(s[m].mean()) for m in METRICS} for seed, s in seeds.items()}
    kw = {"resamples": settings.resamples, "seed": 0}
    arms = {arm: category_intervals(categories, scores, **kw) for arm, scores in pooled.items()}
    experiments = experiments_of(settings.arms)
    differences = {}
    for exp in experiments:
        for name in exp["differences"]:
            a, b = name.split(" - ")
            delta = {m: pooled[a][m] - pooled[b][m] for m in METRICS}
            differences[name] = category_intervals(categories, delta, **kw)

    def as_json(table: dict[str, dict[str, dict]]) -> dict:
        return {
            name: {c: {k: (v.to_dict() if k in METRICS else v) for k, v in cell.items()} for c, cell in cats.items()}
            for name, cats in table.items()
        }

    n_seeds = len(evals[settings.arms[0]])
    held = json.loads((out / "split.json").read_text(encoding="utf-8"))["eval_paths"]
    header = [
        f"- model `{settings.model}`, repository `{settings.repo}`: {len(held)} held-out files (never trained on by "
        f"any arm), {len(ids)} FIM items ({len(set(categories))} categories, up to {settings.per_category} each)",
        f"- {n_seeds} training seed(s) per arm; a trained arm's score per item is its mean over the seeds; intervals "
        f"are 95% percentile bootstrap intervals over items ({settings.resamples} resamples, seed 0), paired for "
        "differences (both arms' scores of the same items resampled together)",
        f"- greedy decoding, at most {settings.max_new_tokens} new tokens, {settings.context_chars} characters of "
        "context; EM = exact match, ES = edit similarity, after truncation to the syntactic unit; middle loss = mean "
        "negative log-likelihood of the reference middle and its end token after the same prompt (nats per token)",
        f"- training: {_training_line(training)}",
    ]
    if settings.recipe_overrides:
        header.append(f"- every arm trained with `{' '.join(settings.recipe_overrides)}`")
    if settings.quick:
        header.insert(0, "- **--quick smoke run: a few steps on a tiny setting; these numbers measure nothing**")
    results = {
        "settings": asdict(settings),
        "held_out_files": held,
        "items": len(ids),
        "experiments": [{**e, "arms": list(e["arms"]), "differences": list(e["differences"])} for e in experiments],
        "scores": as_json(arms),
        "differences": as_json(differences),
        "per_seed": per_seed,
        "training": training,
    }
    write_json_atomic(out / "results.json", results)
    write_text_atomic(out / "results.md", results_markdown(experiments, arms, differences, per_seed, header))
    plot_results(out / "results.png", experiments, arms)
    return results


def _span(values: list[float], fmt: str) -> str:
    """`low-high`, or one value when all are equal."""
    low, high = format(min(values), fmt), format(max(values), fmt)
    return low if low == high else f"{low}-{high}"


def _training_line(training: dict) -> str:
    runs = list(training.values())
    steps = "/".join(str(s) for s in sorted({r["steps"] for r in runs}))
    seen = [r["tokens_seen"] for r in runs if r["tokens_seen"]]
    seconds = [r["train_seconds"] for r in runs if r["train_seconds"]]
    parts = [f"{len(runs)} runs of {steps} optimizer steps"]
    parts += [f"{_span(seen, ',')} tokens seen per run"] if seen else []
    parts += [f"{_span(seconds, '.0f')} s per run"] if seconds else []
    return ", ".join(parts)


# ------------------------------------------------------------------------------------------------ the command


def run_experiment(out: Path, settings: Settings) -> dict:
    """Train, evaluate and analyse, skipping every part that a previous (interrupted) run finished."""
    from finetune.config.load import load_recipe
    from finetune.evaluate.options import make_console

    console = make_console()
    out.mkdir(parents=True, exist_ok=True)
    check_settings(out, settings)
    held = held_out_files(out, settings.repo, settings.holdout)
    excluded = exclude_patterns(held)
    # the overrides are checked here, before anything runs: a mistyped key is one line, not a failed first run
    base = load_recipe(
        RECIPES / "base.yaml", [f"data.sources.0.path={_yaml_string(settings.repo)}", *settings.recipe_overrides]
    )
    family = base.model.family
    jobs = [(arm, seed) for arm in settings.arms for seed in range(1, settings.seeds + 1)]
    _say(f"experiment: {len(held)} held-out files, {len(jobs)} training runs, {len(jobs) + 1} evaluations in {out}")
    evals: dict[str, dict[int | None, Path]] = {"base": {None: evaluate_model(out, settings, "base", None, family)}}
    training: dict[str, dict] = {}
    for done, (arm, seed) in enumerate(jobs, 1):
        _say(f"[{done}/{len(jobs)}] {arm} seed {seed}")
        run_dir = train_arm(out, settings, arm, seed, excluded, console)
        check_never_trained_on(run_dir, excluded)
        training[run_dir.name] = training_record(run_dir)
        evals.setdefault(arm, {})[seed] = evaluate_model(out, settings, run_dir.name, run_dir, family)
    results = analyse(out, settings, evals, training)
    _say(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}")
    return results


def _arms(text: str) -> tuple[str, ...]:
    arms = tuple(dict.fromkeys(a.strip() for a in text.split(",") if a.strip()))
    unknown = [a for a in arms if a not in ARMS]
    if not arms or unknown:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown) or 'none given'}: choose from {', '.join(ARMS)}")
    return arms


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune.dev.experiment", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for runs, evaluations and results")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"base model directory (default {DEFAULT_MODEL})")
    parser.add_argument(
        "--repo", default=str(DEFAULT_REPO), help="repository to fine-tune on (default: stdlib asyncio)"
    )
    parser.add_argument("--seeds", type=_positive, help="training seeds per arm (default 3; 1 with --quick)")
    parser.add_argument("--steps", type=_positive, help="optimizer steps per run (default: the recipes', 60)")
    parser.add_argument(
        "--arms", type=_arms, default=ARMS, help=f"arms to train, comma-separated (default {','.join(ARMS)})"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a recipe override for every arm (repeatable), e.g. training.learning_rate=3e-4",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of the pipeline: 2 steps, tiny settings")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    settings = Settings(
        model=args.model, repo=args.repo, quick=args.quick, arms=args.arms, recipe_overrides=tuple(args.overrides)
    )
    if args.quick:
        settings = replace(
            settings, seeds=1, steps=2, per_category=1, max_new_tokens=8, context_chars=500, resamples=200
        )
    settings = replace(settings, seeds=args.seeds or settings.seeds, steps=args.steps or settings.steps)
    try:
        run_experiment(args.out, settings)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
