"""`finetune chat`: talk to an SFT model in its saved chat template, one message (--message or stdin) or a loop."""

from __future__ import annotations

import argparse
import sys

from finetune.cli import args as types
from finetune.cli.complete import add_sampling_arguments
from finetune.errors import UserError


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cmd_chat(args: argparse.Namespace) -> int:
    from finetune.inference.chat import interact, load_chat
    from finetune.inference.complete import Sampling

    message = args.message
    if message is None and not sys.stdin.isatty():
        message = sys.stdin.read()
    if message is not None and not message.strip():
        raise UserError("nothing to say: the message is empty; pass --message TEXT or pipe text in")
    chat = load_chat(args.model, args.adapter, dtype=args.dtype, system=args.system)
    sampling = Sampling(args.max_new_tokens, args.temperature, args.top_p, args.top_k, args.seed)
    if args.seed is not None:
        import torch

        torch.manual_seed(args.seed)
    if message is None:
        interact(chat, sampling, input, _write, _note)
        return 0
    reply = chat.reply(message.strip(), sampling, _write)
    _write("\n")
    ended = "the end of the turn" if reply.stopped else f"--max-new-tokens {args.max_new_tokens}"
    _note(
        f"[{chat.label}] {reply.prompt_tokens} prompt tokens, {len(reply.ids)} new tokens in {reply.seconds:.2f}s "
        f"({reply.tokens_per_second:.1f} tokens/s), ended by {ended}"
    )
    return 0


def add_parser(sub) -> None:
    """Register `finetune chat`."""
    p = sub.add_parser("chat", help="chat with an instruction-tuned (SFT) model in the template its run saved")
    p.add_argument("--model", help="base model directory, or a merged or full fine-tune's output_dir")
    p.add_argument("--adapter", type=types.existing_dir, help="an SFT run's output_dir holding a LoRA/DoRA adapter")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto")
    p.add_argument("--message", help="answer this one message and exit (default: standard input when piped, "
                   "else a prompt loop; /exit or Ctrl-D leaves)")  # fmt: skip
    p.add_argument("--system", help="system prompt (default: the one the run's template puts in)")
    add_sampling_arguments(p, max_new_tokens=256)
    p.set_defaults(func=cmd_chat)
