"""What `finetune merge` is asked to do: fold adapters into their base (a model any server loads), or combine several into one adapter.

A QLoRA adapter learned corrections to the 4-bit weights, so by default it is merged into the dequantized 4-bit
base (what training computed with), not into the original full-precision weights; `--verify` measures the result
against base + adapter(s) as PEFT applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

COMBINATIONS = ("linear", "cat", "svd", "ties", "dare_linear", "dare_ties")
EQUAL_RANK_METHODS = ("linear", "ties", "dare_linear", "dare_ties")  # PEFT needs equal ranks for these
DENSITY_METHODS = ("ties", "dare_linear", "dare_ties")


@dataclass(frozen=True)
class MergeOptions:
    """One merge: the adapters, where the output goes, and how (the command line builds it; Python callers too)."""

    adapters: list[Path]
    out: Path
    base: str | None = None
    dtype: str = "auto"  # auto | bf16 | fp16 | fp32
    device: str = "cpu"  # cpu | cuda
    qlora_base: str | None = None  # dequantized | original (None: dequantized for QLoRA adapters)
    qlora: bool = False
    method: str | None = None  # one of COMBINATIONS (None: cat)
    weights: str | None = None
    density: float | None = None
    seed: int = 0
    into_base: bool = False
    verify: bool = False
    tolerance: float | None = None
    max_shard_size: str = "5GB"
    force: bool = False
