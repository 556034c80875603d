"""`finetune eval`: score a model (and a base to compare) on held-out FIM items of a repository, or on an
infilling benchmark with execution; write results.json, report.md, predictions.jsonl and, with --plot, a chart.
"""

from __future__ import annotations

from pathlib import Path

from finetune.errors import UserError
from finetune.evaluate.benchmark import run_benchmark
from finetune.evaluate.fim import run_fim
from finetune.evaluate.options import EvalOptions

__all__ = ["EVAL_FILES", "EvalOptions", "evaluate"]


EVAL_FILES = frozenset({"results.json", "report.md", "predictions.jsonl", "scores.png"})


def _check_out(out: Path) -> None:
    if not out.is_dir():
        return
    foreign = sorted(p.name for p in out.iterdir() if p.name not in EVAL_FILES and not p.name.startswith("."))
    if foreign:
        raise UserError(
            f"--out {out} holds files an eval does not write ({', '.join(foreign[:3])}): choose a new or empty folder"
        )


def evaluate(options: EvalOptions) -> int:
    """Run the evaluation the options describe; writes into `options.out` and returns the exit status."""
    if bool(options.repo) == bool(options.benchmark):
        raise UserError("pass exactly one of --repo DIR (held-out FIM items) or --benchmark FILE (infilling tests)")
    if not options.oracle and not options.model and not options.adapter:
        raise UserError("pass --model DIR (and --adapter RUN_DIR for a LoRA run), or --oracle to check the benchmark")
    if options.limit and options.repo:
        raise UserError("--limit counts benchmark tasks: with --repo, cap the items with --per-category N or --categories")
    if options.plot and options.benchmark:
        raise UserError("--plot draws per-category FIM scores: use it with --repo")
    _check_out(Path(options.out))
    from finetune.io import sweep_stale

    for line in sweep_stale(Path(options.out), EVAL_FILES):  # leftovers of a killed eval into this folder
        print(line)
    if options.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UserError("--plot needs matplotlib: pip install 'finetune[plot]' (or leave out --plot)") from None
    return run_benchmark(options) if options.benchmark else run_fim(options)
