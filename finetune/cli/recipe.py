"""`finetune recipe show|keys`: the fully resolved recipe, or every key with its type, default and description."""

from __future__ import annotations

import argparse
import sys

from finetune.cli.common import add_recipe_arguments, make_console


def add_parser(sub) -> None:
    recipe = sub.add_parser("recipe", help="show a resolved recipe or list every recipe key")
    recipe_sub = recipe.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    show = recipe_sub.add_parser("show", help="print the fully resolved recipe (bases and overrides applied)")
    add_recipe_arguments(show)
    show.set_defaults(func=cmd_recipe_show)
    keys = recipe_sub.add_parser("keys", help="list every recipe key with its type, default and description")
    keys.set_defaults(func=cmd_recipe_keys)


def cmd_recipe_show(args: argparse.Namespace) -> int:
    from finetune.config.load import load_recipe, recipe_to_yaml

    sys.stdout.write(recipe_to_yaml(load_recipe(args.recipe, args.overrides)))
    return 0


def cmd_recipe_keys(args: argparse.Namespace) -> int:
    from rich.table import Table

    from finetune.config.explain import iter_keys

    table = Table("key", "type", "default", "description", box=None, pad_edge=False)
    for key, type_name, default, description in iter_keys():
        table.add_row(key, type_name, default, description)
    make_console().print(table)
    return 0
