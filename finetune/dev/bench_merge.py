"""Measure `finetune merge` on a model of real size without downloading one: a random-weight Llama-shaped base
(7B shape by default), a random LoRA adapter, then the merge command in its own process (time, peak RSS, --verify).

    python -m finetune.dev.bench_merge --workdir /tmp/bench-merge            # 7B shape, bf16, merge on CPU
    python -m finetune.dev.bench_merge --workdir /tmp/bench-merge --qlora --device cuda
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml


def build_base(directory: Path, args: argparse.Namespace) -> None:
    """Random weights (normal, std 0.02) in bf16, saved as 5 GB safetensors shards."""
    from transformers import LlamaConfig

    from finetune.runtime import seeded_random_model

    config = LlamaConfig(
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 128,
        num_key_value_heads=args.hidden // 128,
        vocab_size=args.vocab,
        dtype="bfloat16",
    )
    model = seeded_random_model(config, 0, dtype=torch.bfloat16)  # allocated in bf16: fp32 first would double the RAM
    model.save_pretrained(directory, max_shard_size="5GB")
    _save_tokenizer(directory)
    make_adapter(model, directory, directory.parent / "adapter", args)


def _save_tokenizer(directory: Path) -> None:
    from finetune.dev.tiny import build_tokenizer

    build_tokenizer("bpe", "starcoder", ["def f(x):\n    return x + 1\n"] * 50, vocab_size=300).save_pretrained(
        directory
    )


def make_adapter(model, base: Path, directory: Path, args: argparse.Namespace) -> None:
    from peft import LoraConfig, get_peft_model

    model.config.name_or_path = model.name_or_path = str(base)  # what adapter_config.json will name
    config = LoraConfig(r=args.r, lora_alpha=2 * args.r, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(0.05)
    peft_model.save_pretrained(directory)
    recipe = {"method": "qlora" if args.qlora else "lora", "model": {"name_or_path": str(base), "dtype": "bf16"}}
    (directory / "recipe.yaml").write_text(yaml.safe_dump(recipe))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, type=Path)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=11008)
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--qlora", action="store_true", help="mark the adapter as QLoRA (dequantized-base merge)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--no-verify", action="store_true")
    args = parser.parse_args(argv)
    base, adapter, out = args.workdir / "base", args.workdir / "adapter", args.workdir / "merged"
    if not (base / "config.json").is_file() or not (adapter / "adapter_config.json").is_file():
        start = time.perf_counter()
        build_base(base, args)
        print(f"built random base + adapter in {time.perf_counter() - start:.0f}s", flush=True)
    recipe = yaml.safe_load((adapter / "recipe.yaml").read_text())
    recipe["method"] = "qlora" if args.qlora else "lora"
    (adapter / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    command = [sys.executable, "-m", "finetune", "merge", str(adapter), "--out", str(out), "--force"]
    command += ["--device", args.device] + ([] if args.no_verify else ["--verify"])
    start = time.perf_counter()
    status = subprocess.call(command)
    seconds = time.perf_counter() - start
    record = json.loads((out / "merge.json").read_text())
    params = sum(p.stat().st_size for p in out.glob("*.safetensors")) / 2  # bf16: 2 bytes per parameter
    verify = record.get("verify") or {}
    print(
        f"merge of a {params / 1e9:.2f}B-parameter {recipe['method']} model on {args.device}: {seconds:.0f}s wall, "
        f"peak RSS {record['peak_rss_bytes'] / 2**30:.1f} GiB, max |logit diff| {verify.get('max_abs_diff')}, "
        f"exit status {status}"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
