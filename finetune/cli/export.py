"""`finetune export --gguf`: a merged Llama model as one GGUF file for llama.cpp and Ollama."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from finetune.cli import args as types
from finetune.errors import UserError
from finetune.export.gguf import OUT_TYPES  # light: gguf, torch and transformers load only when exporting


def cmd_export(args: argparse.Namespace) -> int:
    from finetune.export.gguf import export_gguf
    from finetune.io import human_bytes

    if Path(args.gguf).exists() and not args.force:
        raise UserError(f"{args.gguf} exists: choose another --gguf path or pass --force to replace it")
    step = 0

    def progress(done: int, total: int) -> None:  # plain lines: a TTY or a log file reads them alike
        nonlocal step
        if done * 10 // max(total, 1) > step or done == total:
            step = done * 10 // max(total, 1)
            print(f"export: {done}/{total} tensors", file=sys.stderr, flush=True)

    result = export_gguf(args.model, args.gguf, args.outtype, on_tensor=progress)
    print(f"wrote {result.path} ({result.tensors} tensors, {args.outtype}, {human_bytes(result.bytes)}) "
          f"in {result.seconds:.1f}s")  # fmt: skip
    return 0


def add_parser(sub) -> None:
    """Register `finetune export`."""
    p = sub.add_parser("export", help="write a merged Llama model as GGUF (llama.cpp, Ollama); needs finetune[gguf]")
    p.add_argument("--model", required=True, type=types.existing_dir, help="merged model directory (finetune merge), or a full run's output_dir")
    p.add_argument("--gguf", required=True, type=types.output_file, metavar="OUT", help="the .gguf file to write")
    p.add_argument("--outtype", choices=OUT_TYPES, default="f16", help="weight type (norms stay f32; default f16)")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=cmd_export)
