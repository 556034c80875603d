"""`finetune data sft FILE --out OUT.jsonl`: see exactly what instruction records become, token by token.

One output line per input record, in input order: where it came from, its shape, the rendered text, `input_ids` and
`labels` (-100 = not in the loss), or the reason it is skipped, so a user can check the masking with their own eyes.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from finetune.cli import args as types
from finetune.data.types import IGNORE_INDEX
from finetune.errors import UserError

_TINY = Path(__file__).resolve().parents[2] / "data" / "tiny-coder"


def add_sft_parser(data_sub) -> None:
    """Register `data sft` under `finetune data`."""
    from finetune.data.sft.chat import TEMPLATE_NAMES
    from finetune.data.sft.records import FORMATS

    sft = data_sub.add_parser("sft", help="render instruction data with a chat template: text, ids and loss labels")
    sft.add_argument("file", type=types.existing_path, help="JSONL, JSON or parquet file, or a local `datasets` folder")
    sft.add_argument("--format", choices=FORMATS, default="auto", help="record shape (default: detected per record)")
    sft.add_argument(
        "--column", action="append", default=[], metavar="NAME=COLUMN",
        help="map a shape's column to yours, e.g. --column output=answer (repeatable)",
    )
    sft.add_argument(
        "--template", default="auto",
        help=f"{', '.join(TEMPLATE_NAMES)} or a Jinja file (auto: the tokenizer's own, else the family's default)",
    )
    sft.add_argument("--tokenizer", help=f"model or tokenizer folder (default: the built-in {_TINY.name})")
    sft.add_argument("--system-prompt", help="system prompt for records that have none")
    sft.add_argument("--max-length", type=types.positive_int, default=2048, help="tokens per sample; longer prompts are cut first")
    sft.add_argument("--split", default="train", help="split of a `datasets` folder")
    sft.add_argument("--out", required=True, type=types.output_file, help="output .jsonl file (written atomically)")
    sft.set_defaults(func=cmd_data_sft)


def _columns(pairs: list[str]) -> dict[str, str]:
    columns = {}
    for pair in pairs:
        name, sep, column = pair.partition("=")
        if not sep or not name or not column:
            raise UserError(f"--column {pair!r} is not NAME=COLUMN: write it like --column output=answer")
        columns[name] = column
    return columns


def _load_tokenizer(folder: str | None):
    from transformers import AutoTokenizer

    path = Path(folder) if folder else _TINY
    if not path.is_dir():
        raise UserError(f"tokenizer folder {path} not found: pass --tokenizer with a model or tokenizer folder")
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise UserError(f"could not load a tokenizer from {path} ({str(exc).splitlines()[0]})") from None


def _family(tokenizer) -> str | None:
    from finetune.data.tokenize.families import detect_family

    try:
        return detect_family(tokenizer)
    except UserError:
        return None


def cmd_data_sft(args: argparse.Namespace) -> int:
    from rich.console import Console

    from finetune.data.ingest.scrub import Scrubber
    from finetune.data.sft.chat import ChatEncoder, resolve_template, setup_chat_tokenizer
    from finetune.data.sft.records import Conversation, InstructionFile, SftReport, iter_conversations
    from finetune.io import sweep_stale, write_jsonl_atomic

    if args.max_length < 8:
        raise UserError("--max-length must be at least 8")
    spec = InstructionFile(args.file, args.format, _columns(args.column), "skip", args.split)
    tokenizer = _load_tokenizer(args.tokenizer)
    is_file = "{" not in args.template and Path(args.template).is_file()
    template = resolve_template(
        tokenizer,
        "auto" if is_file else args.template,
        args.template if is_file else None,
        _family(tokenizer),
    )
    added = setup_chat_tokenizer(tokenizer, template, args.system_prompt, add_tokens=True)
    chat = ChatEncoder(tokenizer, tokenizer.chat_template, template.name)
    report = SftReport()
    scrubber = Scrubber()
    notes: Counter[str] = Counter()

    def records():
        for where, item in iter_conversations(spec, report, scrubber):
            if not isinstance(item, Conversation):  # the message may quote a record's value (an unknown role)
                yield {"source": where, "skipped": item.reason, "error": scrubber.text(str(item), "", "instruction")}
                continue
            row = chat.encode(item, args.max_length)
            if row.note:
                notes[row.note] += 1
            record = {"source": where, "shape": item.shape, "text": row.text}
            if row.note:
                record["note"] = row.note
            yield {**record, "input_ids": row.input_ids, "labels": row.labels}

    swept = sweep_stale(Path(args.out).parent, [Path(args.out).name])
    count = write_jsonl_atomic(Path(args.out), records())
    console = Console(highlight=False)
    for line in swept:
        console.print(f"[dim]note:[/dim] {line}")
    for line in report.lines() + scrubber.report.lines():
        console.print(f"[dim]data:[/dim] {line}")
    extra = f", added {added} template tokens to the tokenizer in memory" if added else ""
    console.print(f"[dim]template:[/dim] {template.name}{extra}")
    if notes:
        console.print("[dim]length:[/dim] " + ", ".join(f"{k} {v}" for k, v in notes.most_common()))
    console.print(f"wrote {count} lines ({report.records_kept} rendered, {count - report.records_kept} skipped) to "
                  f"{args.out}")
    return 0


def chat_panel(chat, encoder, conversation, max_length: int):
    """A `data inspect` panel for one conversation: tokens outside the loss dimmed, the loss in green."""
    from rich.panel import Panel

    from finetune.data.inspect import token_view

    row = chat.encode(conversation, max_length)
    in_loss = sum(label != IGNORE_INDEX for label in row.labels)
    note = f", {row.note}" if row.note else ""
    title = f"{conversation.source}  (chat, {conversation.shape}, {chat.name} template{note})"
    subtitle = f"{len(row.input_ids)} tokens, {in_loss} in the loss (green); special tokens magenta"
    view = token_view(encoder, {"input_ids": row.input_ids, "labels": row.labels})
    return Panel(view, title=title, subtitle=subtitle, title_align="left")
