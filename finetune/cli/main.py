"""The `finetune` command line: one registry of commands, one-line errors with exit status 2 for bad input.

Each command lives in its own module of this package and imports its heavy libraries (torch, transformers, ...)
only when it runs, so `finetune --help` and a bad option are answered at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import finetune
from finetune.cli import cache, chat, complete, data, evaluate, export, launch_check, merge, recipe, train
from finetune.cli.args import Parser
from finetune.cli.deepspeed_gate import deepspeed_only_when_launched
from finetune.errors import UserError

# each registers its subcommand(s), in the order `finetune --help` lists them
COMMANDS = (
    train.add_parser,
    launch_check.add_parser,
    train.add_prepare_parser,
    data.add_parser,
    cache.add_cache_parser,
    merge.add_parser,
    export.add_parser,
    complete.add_parser,
    chat.add_parser,
    evaluate.add_parser,
    recipe.add_parser,
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="finetune",
        description="Fine-tune code LLMs on your repositories (FIM, SFT; LoRA, QLoRA, DoRA, full).",
    )
    parser.add_argument("--version", action="version", version=f"finetune {finetune.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers 5 renames arguments that TRL still passes; the notices say nothing a user can act on
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's one-line usage error: a code for callers, not an exception
        return exc.code if isinstance(exc.code, int) else 2
    try:
        with deepspeed_only_when_launched():
            return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
