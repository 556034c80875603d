"""DeepSpeed stays unimported unless the process was launched to use it.

Accelerate and transformers import DeepSpeed whenever it is installed (accelerate's `extract_model_from_parallel`
does at every trainer start): 2.3 s of a 2-core CPU and a "Setting accelerator to CPU" warning on every command of a
machine without GPUs, for a library the run does not use. A `None` entry in `sys.modules` is Python's mark for an
absent module: `importlib.util.find_spec` answers None for it, so each library's "is DeepSpeed available" check says
no, and an import raises ImportError. The mark is removed when the command returns, so other code of the same
process (a test session) can still import DeepSpeed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

_NAME = "deepspeed"


def launched_with_deepspeed(env: Mapping[str, str]) -> bool:
    """What `accelerate launch` sets for a DeepSpeed process (the one way a run here uses DeepSpeed)."""
    return env.get("ACCELERATE_USE_DEEPSPEED", "").strip().lower() in {"1", "true", "yes", "on"}


@contextmanager
def deepspeed_only_when_launched(env: Mapping[str, str] | None = None) -> Iterator[bool]:
    """Hide DeepSpeed for the duration unless the launch uses it (or it is already loaded); yields whether hidden."""
    env = os.environ if env is None else env
    if launched_with_deepspeed(env) or _NAME in sys.modules:
        yield False
        return
    sys.modules[_NAME] = None  # type: ignore[assignment]
    try:
        yield True
    finally:
        if _NAME in sys.modules and sys.modules[_NAME] is None:
            del sys.modules[_NAME]
