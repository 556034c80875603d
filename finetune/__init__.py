"""finetune: fine-tune code LLMs on your own repositories."""

__version__ = "0.3.0"
