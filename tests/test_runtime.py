"""Process-wide settings made once: the CPU allocator keeps freed memory; bitsandbytes opens no command with a notice."""

from __future__ import annotations

import logging
import platform
import subprocess
import sys

import pytest

_PROBE = """
import resource, sys, torch
from finetune.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
for _ in range(10):  # warm-up steps: glibc settles where it keeps the block within a few
    torch.ones(12 << 20).sum()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # ten micro-batches that each allocate, touch and free 48 MiB
    torch.ones(12 << 20).sum()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="a glibc malloc setting")
def test_freed_step_memory_is_reused_instead_of_faulted_in_again():
    pages = (48 << 20) // 4096
    default, kept = _page_faults("default"), _page_faults("keep")
    assert default > 5 * pages  # glibc maps each 48 MiB block afresh: every page faults every time
    assert kept < pages // 4  # the same block comes back from the heap, already mapped


def test_importing_bitsandbytes_after_finetune_prints_no_hub_kernel_notice():
    """On CPUs with AVX512-BF16, bitsandbytes warns at import that it could not download a kernel: every command
    imports it through PEFT, and the line opened every command's output."""
    pytest.importorskip("bitsandbytes")
    code = "import logging, finetune, bitsandbytes; print(logging.getLogger('bitsandbytes.backends.cpu.ops').level)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "kernels-community" not in done.stderr
    assert done.stdout.split()[-1] == str(logging.ERROR)
