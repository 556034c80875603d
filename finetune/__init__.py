"""finetune: fine-tune code LLMs on your own repositories."""

__version__ = "0.2.0"

import logging as _logging

# On CPUs with AVX512-BF16, bitsandbytes tries to fetch an optional kernel from the hub and warns when offline.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
