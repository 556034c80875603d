"""What several commands share: the console, and a recipe checked before anything heavy is imported."""

from __future__ import annotations

import argparse


def make_console():
    """The console commands print to (rich, no syntax highlighting of numbers and paths).

    Piped into a file or another program, rich would wrap at 80 columns and break paths and numbers apart: lines
    are then written whole.
    """
    import sys

    from rich.console import Console

    return Console(stderr=False, highlight=False, soft_wrap=not sys.stdout.isatty())


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. training.max_steps=50")


def checked_recipe(args: argparse.Namespace):
    """The command's recipe, validated, with every input path checked: before any heavy import or model load."""
    from finetune.config.inputs import check_recipe_inputs
    from finetune.config.load import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    check_recipe_inputs(recipe)
    return recipe
