"""`python -m finetune.dev.bench eval`: the time of a two-model `finetune eval --repo` on a real package.

Default: the standard library's `asyncio` package (every file held out: no split.json), `data/tiny-coder` against
itself (or `--adapter RUN` against its base), 17 items per category (~200 items). Prints the items, each model's
generation time, tokens/s and how generation ended, the wall and CPU time of the whole eval (CPU time is the figure
to compare on a machine shared with other jobs), and with `--check` the same eval without early stopping: the
tokens it generated and whether every truncated prediction is the same.
"""

from __future__ import annotations

import json
import resource
import sysconfig
import tempfile
import time
from pathlib import Path


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed_eval(options) -> tuple[dict, list[dict], float, float]:
    from finetune.evaluate.run import evaluate

    wall, cpu = time.perf_counter(), _cpu_seconds()
    evaluate(options)
    wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
    out = Path(options.out)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    return json.loads((out / "results.json").read_text(encoding="utf-8")), rows, wall, cpu


def _print_runs(results: dict, wall: float, cpu: float, what: str) -> None:
    print(f"{what}: {results['items']} items, {len(results['runs'])} models: {wall:.1f} s wall, {cpu:.1f} s CPU")
    for run in results["runs"]:
        gen = run["generation"]
        print(
            f"  {run['label']:<20} {gen['seconds']:7.1f} s generating  {gen['new_tokens']:7d} tokens  "
            f"{gen['tokens_per_second']:7.1f} tokens/s  ended {gen['ended']}  "
            f"saved at most {gen['tokens_saved_at_most']} tokens"
        )


def bench_eval(args) -> int:
    from finetune.evaluate.options import EvalOptions

    repo = args.repo or str(Path(sysconfig.get_paths()["stdlib"]) / "asyncio")
    base = {
        "repo": repo,
        "model": args.model,
        "adapter": args.adapter,
        "compare": args.model,  # the same model again, or the adapter's base
        "per_category": args.per_category,
        "context_chars": args.context_chars,
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
    }
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        results, rows, wall, cpu = _timed_eval(EvalOptions(out=f"{tmp}/early", early_stop=not args.no_early_stop, **base))
        _print_runs(results, wall, cpu, "eval" if not args.no_early_stop else "eval without early stopping")
        if not args.check:
            return 0
        full, full_rows, wall, cpu = _timed_eval(EvalOptions(out=f"{tmp}/full", early_stop=False, **base))
        _print_runs(full, wall, cpu, "the same without early stopping")
        labels = [run["label"] for run in results["runs"]]
        same = sum(
            a[f"{label}.prediction"] == b[f"{label}.prediction"]
            for a, b in zip(rows, full_rows, strict=True)
            for label in labels
        )
        print(f"truncated predictions equal with and without early stopping: {same} of {len(rows) * len(labels)}")
        for run, other in zip(results["runs"], full["runs"], strict=True):
            saved = other["generation"]["new_tokens"] - run["generation"]["new_tokens"]
            print(f"  {run['label']}: early stopping saved {saved} of {other['generation']['new_tokens']} tokens")
        return 0 if same == len(rows) * len(labels) else 1


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="time a two-model `finetune eval --repo` (default: the stdlib's asyncio)")
    p.add_argument("--model", default="data/tiny-coder", help="model directory (default: data/tiny-coder)")
    p.add_argument("--adapter", help="a training run: evaluated against --model, its base")
    p.add_argument("--repo", help="repository (default: the standard library's asyncio package)")
    p.add_argument("--per-category", type=int, default=17, help="items per category (17: ~200 items on asyncio)")
    p.add_argument("--context-chars", type=int, default=4000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--no-early-stop", action="store_true", help="generate up to a stop token or --max-new-tokens")
    p.add_argument("--check", action="store_true", help="also run without early stopping and compare predictions")
