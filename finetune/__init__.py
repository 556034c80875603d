"""finetune: fine-tune code LLMs on your own repositories."""

import logging

__version__ = "0.3.0"

# bitsandbytes (imported by PEFT, so by most commands) tries at import to fetch an optional CPU kernel from the hub
# on CPUs with AVX512-BF16 and warns when it cannot. Nothing here downloads, and the line would open every command's
# output; set before any import of bitsandbytes, which is why it is here.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
