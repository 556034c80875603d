"""`finetune train` and `finetune prepare`: a run as the recipe says, or only its tokenized, cached data."""

from __future__ import annotations

import argparse

from finetune.cli.common import add_recipe_arguments, checked_recipe, make_console


def add_parser(sub) -> None:
    train = sub.add_parser("train", help="train as a recipe says (also under `accelerate launch -m finetune train`)")
    add_recipe_arguments(train)
    train.set_defaults(func=cmd_train)


def add_prepare_parser(sub) -> None:
    prep = sub.add_parser("prepare", help="tokenize and cache the training set; `train` reuses a matching cache")
    add_recipe_arguments(prep)
    prep.set_defaults(func=cmd_prepare)


def cmd_train(args: argparse.Namespace) -> int:
    recipe = checked_recipe(args)
    from datasets.utils.logging import disable_progress_bar as quiet_datasets
    from transformers.utils.logging import disable_progress_bar as quiet_transformers

    from finetune.training.trainer import run

    quiet_datasets()  # per-shard save/pack bars of a few milliseconds each: noise between the lines that matter
    quiet_transformers()
    console = make_console()
    summary = run(recipe, console=console)
    if summary is not None:
        console.rule("[bold]finetune train: done")
        for line in summary.lines():
            console.print(line)
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    recipe = checked_recipe(args)
    from finetune.data.cache import prepare

    console = make_console()
    prepared = prepare(recipe)
    family, data, entry, cached = prepared.setup.family, prepared.data, prepared.entry, prepared.cached
    for line in data.ingest_lines:
        console.print(f"[dim]data:[/dim] {line}")
    stats = ", ".join(f"{k} {v:,}" for k, v in sorted(data.stats.items()))
    console.print(f"[dim]samples:[/dim] {stats}")
    console.rule("[bold]finetune prepare: done")
    console.print(f"{len(data.train):,} train / {len(data.eval) if data.eval else 0:,} eval samples, family {family}")
    console.print(f"{'reused' if cached else 'wrote'} {entry} (report.json there); `finetune train` will reuse it")
    return 0
