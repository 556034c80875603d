"""`finetune complete`: fill in the middle at a cursor, from a file and LINE:COL, two files, or standard input."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from finetune.cli import args as types
from finetune.errors import UserError


def split_at_cursor(text: str, cursor: str) -> tuple[str, str]:
    """Split `text` at `LINE:COL` (both 1-based, in characters; COL may be one past the line's end)."""
    try:
        line_s, col_s = cursor.split(":")
        line, col = int(line_s), int(col_s)
    except ValueError:
        raise UserError(f"--cursor {cursor!r} is not LINE:COL: write it like 12:5 (1-based line and column)") from None
    lines = text.split("\n")
    if not 1 <= line <= len(lines):
        raise UserError(f"--cursor {cursor}: line {line} is outside the file (it has {len(lines)} lines)")
    if not 1 <= col <= len(lines[line - 1]) + 1:
        raise UserError(
            f"--cursor {cursor}: column {col} is outside line {line} (columns 1..{len(lines[line - 1]) + 1})"
        )
    offset = sum(len(part) + 1 for part in lines[: line - 1]) + col - 1
    return text[:offset], text[offset:]


def _read(path: str, what: str) -> str:
    if path == "-":
        return sys.stdin.read()
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{what} {path} not found: check the path")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text") from None


def _inputs(args: argparse.Namespace) -> tuple[str, str, str]:
    """prefix, suffix and the path for the header, from --file/--cursor, --prefix-file/--suffix-file, or stdin."""
    if args.file and (args.prefix_file or args.suffix_file):
        raise UserError("give either --file (with --cursor) or --prefix-file/--suffix-file, not both")
    if args.prefix_file or args.suffix_file:
        prefix = _read(args.prefix_file, "prefix file") if args.prefix_file else ""
        suffix = _read(args.suffix_file, "suffix file") if args.suffix_file else ""
        return prefix, suffix, args.path or ""
    if args.file is None and sys.stdin.isatty():
        raise UserError("nothing to complete: pass --file PATH --cursor LINE:COL, --prefix-file, or pipe the file in")
    text = _read(args.file or "-", "file")
    if not text.strip():
        raise UserError(f"nothing to complete: {args.file or 'standard input'} is empty; give code before the cursor")
    if args.cursor is None:
        prefix, suffix = text, ""
    else:
        prefix, suffix = split_at_cursor(text, args.cursor)
    path = args.path if args.path is not None else (args.file if args.file not in (None, "-") else "")
    return prefix, suffix, path


def cmd_complete(args: argparse.Namespace) -> int:
    from finetune.data.ingest.languages import detect_language
    from finetune.inference.complete import Sampling, fit_context, generate, load_completer

    prefix, suffix, path = _inputs(args)
    language = args.language or (detect_language(path, (prefix + suffix).split("\n", 1)[0]) if path else None) or ""
    completer = load_completer(args.model, args.adapter, family=args.family, dtype=args.dtype)
    spm = {"spm": True, "psm": False, "auto": None}[args.order]
    budget = args.context_tokens or (
        completer.max_positions - args.max_new_tokens if completer.max_positions is not None else None
    )
    if budget is not None and budget < 16:
        raise UserError(f"no room for a prompt: lower --max-new-tokens (the model takes {completer.max_positions})")
    prompt, kept_prefix, kept_suffix = fit_context(completer, prefix, suffix, path, language, spm, budget)
    if (kept_prefix, kept_suffix) != (prefix, suffix):
        print(
            f"context trimmed to fit {budget} tokens: {kept_prefix.count(chr(10))} of {prefix.count(chr(10))} lines "
            f"before the cursor, {kept_suffix.count(chr(10))} of {suffix.count(chr(10))} after",
            file=sys.stderr,
        )
    sampling = Sampling(args.max_new_tokens, args.temperature, args.top_p, args.top_k, args.seed)
    stops = None
    if args.truncate:
        from functools import partial

        from finetune.evaluate.truncate import settled, truncate

        stops = [partial(settled, language=language, mode=args.truncate, prefix=prefix)]
    results, stats = generate(completer, [prompt], sampling, stops=stops)
    result = results[0]
    assert result is not None
    middle = truncate(result.text, language, args.truncate, prefix) if args.truncate else result.text
    sys.stdout.write(middle + ("\n" if middle and not middle.endswith("\n") else ""))
    ended = {
        "stop_token": "a stop token",
        "rule": f"the end of the --truncate {args.truncate} unit",
        "limit": f"--max-new-tokens {args.max_new_tokens}",
    }[result.ended]
    print(
        f"[{completer.family}, {'SPM' if (spm if spm is not None else completer.encoder.family.default_spm) else 'PSM'}] "
        f"{len(prompt)} prompt tokens, {len(result.ids)} new tokens in {stats.seconds:.2f}s "
        f"({stats.tokens_per_second:.1f} tokens/s), ended by {ended}",
        file=sys.stderr,
    )
    return 0



def add_model_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    parser.add_argument("--model", required=required, help="base model directory (or a full fine-tune's output_dir)")
    parser.add_argument("--adapter", type=types.existing_dir, help="a training run's output_dir holding a LoRA/DoRA adapter or a full model")
    parser.add_argument("--family", default="auto", help="prompt family (default: the run's recipe, else detected)")
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto")


def add_sampling_arguments(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    parser.add_argument("--max-new-tokens", type=types.positive_int, default=max_new_tokens, help="most tokens generated")
    parser.add_argument("--temperature", type=types.nonnegative_float, default=0.0, help="0 = greedy (default); > 0 samples")
    parser.add_argument("--top-p", type=types.open_fraction, default=1.0, help="nucleus sampling mass (with --temperature)")
    parser.add_argument("--top-k", type=types.nonnegative_int, default=0, help="sample among the k likeliest tokens (0 = all)")
    parser.add_argument("--seed", type=types.seed, default=None, help="seed for sampling")


def add_parser(sub) -> None:
    """Register `finetune complete`."""
    from finetune.evaluate.truncate import MODES

    p = sub.add_parser("complete", help="fill in the middle at a cursor with the prompt format the model trained on")
    add_model_arguments(p, required=False)
    p.add_argument("--file", type=types.existing_file, help="source file ('-' = stdin); without --cursor the cursor is at its end")
    p.add_argument("--cursor", metavar="LINE:COL", help="where to complete, 1-based line and column")
    p.add_argument("--prefix-file", type=types.existing_file, help="text before the cursor ('-' = stdin)")
    p.add_argument("--suffix-file", type=types.existing_file, help="text after the cursor")
    p.add_argument("--path", help="file path for the family's header (default: --file)")
    p.add_argument("--language", help="language id for the header and --truncate (default: from the path)")
    p.add_argument("--order", choices=["auto", "psm", "spm"], default="auto", help="FIM order (auto: the family's)")
    p.add_argument("--truncate", choices=[m for m in MODES if m != "none"], help="cut the middle after one unit")
    p.add_argument(
        "--context-tokens",
        type=types.positive_int,
        help="prompt budget; longer prompts keep the lines nearest the cursor (default: the model's positions "
        "minus --max-new-tokens)",
    )
    add_sampling_arguments(p, max_new_tokens=128)
    p.set_defaults(func=cmd_complete)
