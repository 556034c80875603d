"""The `finetune` command line: one subcommand per job, one-line errors with exit status 2 for bad input."""

from __future__ import annotations

import argparse
import os
import sys
import warnings

from finetune.errors import UserError


def _console():
    from rich.console import Console

    return Console(stderr=False, highlight=False)


def cmd_train(args: argparse.Namespace) -> int:
    from finetune.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    from finetune.train import run

    console = _console()
    summary = run(recipe, console=console)
    if summary is not None:
        console.rule("[bold]finetune train: done")
        for line in summary.lines():
            console.print(line)
    return 0


def cmd_recipe_show(args: argparse.Namespace) -> int:
    from finetune.recipe import load_recipe, recipe_to_yaml

    sys.stdout.write(recipe_to_yaml(load_recipe(args.recipe, args.overrides)))
    return 0


def cmd_recipe_keys(args: argparse.Namespace) -> int:
    from rich.table import Table

    from finetune.recipe import iter_keys

    table = Table("key", "type", "default", "description", box=None, pad_edge=False)
    for key, type_name, default, description in iter_keys():
        table.add_row(key, type_name, default, description)
    _console().print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetune",
        description="Fine-tune code LLMs on your repositories (FIM, SFT; LoRA, QLoRA, DoRA, full).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train = sub.add_parser("train", help="train as a recipe says (also under `accelerate launch -m finetune train`)")
    train.add_argument("recipe", help="recipe YAML file")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. training.max_steps=50")
    train.set_defaults(func=cmd_train)

    recipe = sub.add_parser("recipe", help="show a resolved recipe or list every recipe key")
    recipe_sub = recipe.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    show = recipe_sub.add_parser("show", help="print the fully resolved recipe (bases and overrides applied)")
    show.add_argument("recipe")
    show.add_argument("overrides", nargs="*", metavar="key=value")
    show.set_defaults(func=cmd_recipe_show)
    keys = recipe_sub.add_parser("keys", help="list every recipe key with its type, default and description")
    keys.set_defaults(func=cmd_recipe_keys)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # transformers 5 renames arguments that TRL still passes; the notices say nothing a user can act on
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
