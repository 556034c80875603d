"""Where and in what precision a model computes: one rule each for the device, the dtype and the 4-bit settings.

Training, merge, completion and evaluation all load models; if each picked its own precision or rebuilt the 4-bit
settings, a merge or an eval could quietly run a different model from the one that was trained. So all of them
ask this module.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import platform
from dataclasses import dataclass

import torch

from finetune.config.schema import QuantizationSection
from finetune.errors import UserError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Runtime:
    """Where and in what precision a run computes; chosen once from the recipe and the machine."""

    use_cuda: bool
    dtype: torch.dtype

    @property
    def bf16(self) -> bool:
        return self.use_cuda and self.dtype == torch.bfloat16

    @property
    def fp16(self) -> bool:
        return self.use_cuda and self.dtype == torch.float16


def resolve_dtype(choice: str, use_cuda: bool) -> torch.dtype:
    """'auto' precision: bf16 on a GPU that has it, fp16 on older GPUs, fp32 on CPU (bf16 autocast is slow there)."""
    if choice in DTYPES:
        return DTYPES[choice]
    if use_cuda:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def resolve_runtime(dtype_choice: str) -> Runtime:
    """The runtime on this machine for a dtype choice ('auto', 'bf16', 'fp16' or 'fp32')."""
    use_cuda = torch.cuda.is_available()
    return Runtime(use_cuda, resolve_dtype(dtype_choice, use_cuda))


def four_bit_config(quantization: QuantizationSection, runtime: Runtime):
    """4-bit NF4 settings for QLoRA; storage dtype = compute dtype so ZeRO-3/FSDP can shard the packed weights."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise UserError("method=qlora needs bitsandbytes: pip install 'finetune[qlora]' (or use method=lora)") from None
    from transformers import BitsAndBytesConfig

    compute = runtime.dtype if quantization.compute_dtype == "auto" else DTYPES[quantization.compute_dtype]
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quantization.quant_type,
        bnb_4bit_use_double_quant=quantization.double_quant,
        bnb_4bit_compute_dtype=compute,
        bnb_4bit_quant_storage=compute,
    )


# glibc's mallopt parameters (malloc.h); mallopt takes an int, so the largest value is 2**31 - 1
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep the memory a CPU step frees for the next one; True if it took the settings.

    Training and generation on CPU repeat the same allocations step after step: every training micro-batch allocates
    and frees the same large tensors (activations, logits and their gradients). By default glibc serves each one over
    its mmap threshold with a fresh mapping and hands the top of its heap back to the kernel above its trim
    threshold, so the next micro-batch faults in and zeroes that memory again: 1.8 million page faults in 33 steps of
    the quickstart job, 40-60 us of kernel time per trained token. Keeping freed memory cuts that to 0.24 million and
    3-5 us, and the step runs 2.5-10% faster; an eval of the sample repository 15% (README, Speed). The process
    holds on to its peak, which the next step reaches again anyway. Not glibc (musl, macOS): nothing changes.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    kept = libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) and libc.mallopt(_M_TOP_PAD, 64 << 20)
    # the largest mmap threshold glibc accepts depends on its version and heap size (2.36 takes 1 GiB): try downwards
    raised = any(libc.mallopt(_M_MMAP_THRESHOLD, size << 20) for size in (1024, 256, 64, 32))
    return bool(kept and raised)


def seeded_random_model(config, seed: int, device: str | None = None, **from_config_kwargs):
    """A causal LM of `config`'s shape with transformers' own random init drawn from `seed`, built on `device`.

    Training from scratch (`model.random_init`), the benchmarks and the tiny test models all need "this shape,
    reproducible weights"; one builder keeps their weights the same for the same seed.
    """
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device) if device else contextlib.nullcontext():
        return AutoModelForCausalLM.from_config(config, **from_config_kwargs)
