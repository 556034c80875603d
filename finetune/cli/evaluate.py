"""`finetune eval`: held-out FIM items of a repository, or an infilling benchmark with sandboxed execution."""

from __future__ import annotations

import argparse

from finetune.cli import args as types
from finetune.cli.args import options_from
from finetune.cli.complete import add_model_arguments, add_sampling_arguments
from finetune.errors import UserError
from finetune.evaluate.benchmark import SHIPPED, benchmark_path
from finetune.evaluate.items import CATEGORIES


def benchmark_file(text: str) -> str:
    """--benchmark: a HumanEval-infilling file, or the short name of one shipped in data/benchmarks."""
    try:
        return str(benchmark_path(text))
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub) -> None:
    """Register `finetune eval`."""
    p = sub.add_parser("eval", help="score completions on held-out files (FIM) or an infilling benchmark (tests)")
    add_model_arguments(p, required=False)
    p.add_argument("--repo", type=types.existing_dir, help="repository: held-out FIM items in aiXcoder's categories")
    p.add_argument(
        "--benchmark",
        type=benchmark_file,
        help=f"HumanEval-infilling JSONL(.gz), or one shipped: {', '.join(SHIPPED)}; generate, run the tests, "
        "report pass@1",
    )
    p.add_argument("--compare", metavar="BASE_MODEL", help="also evaluate this base model on the same items")
    p.add_argument("--out", required=True, type=types.output_dir, help="output folder for results.json, report.md, predictions.jsonl")
    p.add_argument("--split", type=types.existing_file, help="split.json of the training run (default: the adapter's or model's)")
    p.add_argument("--oracle", action="store_true", help="score the reference solutions (checks the benchmark)")
    p.add_argument("--plot", action="store_true", help="also draw scores.png (needs matplotlib)")
    p.add_argument("--categories", help=f"comma-separated subset of: {','.join(CATEGORIES)}")
    p.add_argument("--per-category", type=types.positive_int, default=20, help="items per category at most")
    p.add_argument("--context-chars", type=types.positive_int, default=4000, help="characters of prefix + middle + suffix at most")
    p.add_argument("--batch-size", type=types.positive_int, default=8, help="prompts generated together")
    p.add_argument("--limit", type=types.positive_int, help="benchmark: only the first N tasks (with --repo: --per-category)")
    p.add_argument("--truncate", choices=["auto", "none"], default="auto", help="benchmark: single-line tasks keep one line")
    p.add_argument("--timeout", type=types.positive_float, default=10.0, help="seconds per benchmark test")
    p.add_argument("--memory-mb", type=types.positive_int, default=1024, help="memory limit per benchmark test")
    p.add_argument(
        "--isolation",
        choices=["auto", "namespace", "subreaper", "session"],
        default="auto",
        help="benchmark: how tests are contained (auto: the strongest this system allows; see README)",
    )
    add_sampling_arguments(p, max_new_tokens=128)
    p.add_argument(
        "--early-stop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stop each completion once its truncation rule has cut it for good (same scores, fewer tokens; default: on)",
    )
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    from finetune.evaluate.run import EvalOptions, evaluate

    return evaluate(options_from(args, EvalOptions))
