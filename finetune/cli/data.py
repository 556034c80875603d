"""`finetune data fim|inspect|sft|scan`: look at the samples a repository, a recipe or an instruction file becomes."""

from __future__ import annotations

import argparse

from finetune.cli import args as types
from finetune.cli import data_scan, data_sft
from finetune.cli.common import add_recipe_arguments, checked_recipe, make_console


def add_parser(sub) -> None:
    data = sub.add_parser("data", help="look at the samples a repository or recipe turns into")
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fim = data_sub.add_parser("fim", help="write the FIM samples of a repository as JSON Lines")
    fim.add_argument("repo", type=types.existing_dir, help="repository directory")
    fim.add_argument("--mode", choices=["structured", "random", "mixed"], default="structured")
    fim.add_argument("--family", help="also write each sample's text in this family's prompt format")
    fim.add_argument("--seed", type=types.seed, default=42)
    fim.add_argument("--spm-rate", type=types.fraction, default=0.5, help="fraction of samples in SPM order")
    fim.add_argument("--max-chars", type=types.positive_int, default=16_000, help="longer files: a window around the middle")
    fim.add_argument("--dedup", choices=["none", "exact", "near"], default="near", help="drop duplicate files")
    fim.add_argument("--keep-secrets", action="store_true", help="do not scrub secrets (they are scrubbed by default)")
    fim.add_argument("--out", required=True, type=types.output_file, help="output .jsonl file (written atomically)")
    fim.set_defaults(func=cmd_data_fim)
    inspect = data_sub.add_parser("inspect", help="show a recipe's formatted samples with the loss tokens coloured")
    add_recipe_arguments(inspect)
    inspect.add_argument("-n", type=types.positive_int, default=5, help="how many samples")
    inspect.add_argument("--mode", choices=["structured", "random", "plain", "chat"], help="only samples of this kind")
    inspect.add_argument("--max-chars", type=types.positive_int, default=4000, help="window size for long files")
    inspect.set_defaults(func=cmd_data_inspect)
    data_sft.add_sft_parser(data_sub)
    data_scan.add_scan_parser(data_sub)


def cmd_data_fim(args: argparse.Namespace) -> int:
    from collections import Counter
    from pathlib import Path

    from finetune.config.schema import FimSection
    from finetune.data.fim.transforms import describe_flow, make_samples
    from finetune.data.ingest.scrub import Scrubber
    from finetune.data.ingest.sources import clean_documents
    from finetune.data.ingest.walk import walk_repository
    from finetune.data.inspect import MODES, sample_record
    from finetune.data.tokenize.families import get_family
    from finetune.io import sweep_stale, write_jsonl_atomic

    if args.family:
        get_family(args.family)
    docs, report = walk_repository(args.repo)
    scrubber = Scrubber()
    docs = clean_documents(docs, report, dedup=args.dedup, scrub=not args.keep_secrets, scrubber=scrubber)
    structured, random_rate = MODES[args.mode]
    fim = FimSection(structured_rate=structured, random_rate=random_rate, spm_rate=args.spm_rate)
    stats: Counter[str] = Counter()
    samples = make_samples(docs, fim, seed=args.seed, max_chars=args.max_chars, stats=stats)
    swept = sweep_stale(Path(args.out).parent, [Path(args.out).name])
    count = write_jsonl_atomic(Path(args.out), (sample_record(s, args.family) for s in samples))
    console = make_console()
    for line in swept:
        console.print(f"[dim]note:[/dim] {line}")
    for line in report.summary_lines() + ([] if args.keep_secrets else scrubber.report.lines()):
        console.print(f"[dim]data:[/dim] {line}")
    for line in describe_flow(stats):
        console.print(f"[dim]samples:[/dim] {line}")
    console.print(f"wrote {count} samples to {args.out}")
    return 0


def cmd_data_inspect(args: argparse.Namespace) -> int:
    recipe = checked_recipe(args)
    from collections import Counter

    from rich.panel import Panel

    from finetune.cli.data_sft import chat_panel
    from finetune.data.context.layout import ContextSample
    from finetune.data.fim.transforms import describe_flow
    from finetune.data.inspect import sample_kind, token_view
    from finetune.data.pipeline import RecipeSources, encode_sample
    from finetune.data.tokenize.setup import load_encoder
    from finetune.data.types import IGNORE_INDEX, Conversation

    setup = load_encoder(recipe)
    family, encoder = setup.family, setup.encoder
    sources = RecipeSources.load(recipe, encoder, setup.chat, max_chars=args.max_chars)
    stats: Counter[str] = Counter()
    items = sources.items(True, stats)  # instruction conversations shuffled in as training sees them
    sft = sources.sft
    console = make_console()
    for line in describe_flow(stats):
        console.print(f"[dim]samples:[/dim] {line}")
    wanted = {args.mode} if args.mode else None
    shown = 0
    for item in items:
        if isinstance(item, Conversation):
            if wanted and "chat" not in wanted:
                continue
            console.print(chat_panel(sft.chat, encoder, item, recipe.data.max_length))
            shown += 1
            if shown >= args.n:
                break
            continue
        sample = item.sample if isinstance(item, ContextSample) else item
        kind = sample_kind(sample)
        if wanted and kind not in wanted:
            continue
        _, row = encode_sample(encoder, item)
        in_loss = sum(label != IGNORE_INDEX for label in row["labels"])
        title = f"{sample.path}  ({kind}{', ' + sample.node_type if sample.node_type else ''}"
        title += f", {'spm' if sample.spm else 'psm'})" if sample.mode == "fim" else ")"
        subtitle = f"{len(row['input_ids'])} tokens, {in_loss} in the loss (green); special tokens magenta"
        console.print(Panel(token_view(encoder, row), title=title, subtitle=subtitle, title_align="left"))
        shown += 1
        if shown >= args.n:
            break
    console.print(f"showed {shown} training samples of family {family}")
    return 0
