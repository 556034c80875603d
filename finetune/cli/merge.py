"""`finetune merge`: fold adapters into their base (a model any server loads), or combine several into one adapter."""

from __future__ import annotations

import argparse

from finetune.cli import args as types
from finetune.cli.args import options_from
from finetune.merge.options import COMBINATIONS, MergeOptions


def add_parser(sub) -> None:
    """Register `finetune merge` on the CLI's subparsers."""
    p = sub.add_parser(
        "merge",
        help="merge adapters into their base model, or combine several adapters into one",
        description="One adapter: merge it into its base (QLoRA: into the dequantized 4-bit base). Several: combine "
        "them into one adapter with --method (or into a merged model with --into-base).",
    )
    p.add_argument("adapters", nargs="+", type=types.existing_dir, metavar="ADAPTER_DIR", help="adapter directories (a run's output_dir)")
    p.add_argument(
        "--out", required=True, type=types.output_dir, help="output directory (must not exist or be empty, unless --force)"
    )
    p.add_argument("--base", help="base model directory or cached hub name (default: the one the adapter names)")
    p.add_argument(
        "--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto", help="output precision (auto = the base's)"
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to merge (default cpu)")
    p.add_argument(
        "--qlora-base",
        choices=["dequantized", "original"],
        default=None,
        help="QLoRA adapters: merge into the dequantized 4-bit base (default, what training saw) or the original "
        "full-precision weights",
    )
    p.add_argument("--qlora", action="store_true", help="treat adapters without recipe.yaml as trained on a 4-bit base")
    p.add_argument("--method", choices=COMBINATIONS, help="how to combine several adapters (default cat)")
    p.add_argument("--weights", help="comma-separated weight per adapter, e.g. 0.5,0.3,0.2 (default equal, sum 1)")
    p.add_argument("--density", type=types.open_fraction, help="fraction of delta entries kept by ties/dare_* (default 0.5)")
    p.add_argument("--seed", type=types.seed, default=0, help="seed for DARE's random pruning")
    p.add_argument("--into-base", action="store_true", help="with several adapters: write a merged model")
    p.add_argument("--verify", action="store_true", help="compare logits with base + adapter(s); exit 1 if too far")
    p.add_argument(
        "--tolerance",
        type=types.positive_float,
        help="max |logit diff| for --verify (default: 1e-4 fp32, 1e-2 fp16, 5e-2 bf16, times the largest |logit|)",
    )
    p.add_argument("--max-shard-size", type=types.byte_size, default="5GB", help="safetensors shard size of a merged model (default 5GB)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out")
    p.set_defaults(func=cmd_merge)


def cmd_merge(args: argparse.Namespace) -> int:
    from finetune.merge.run import run_merge  # torch, transformers and PEFT load only when merging

    return run_merge(options_from(args, MergeOptions))
