"""finetune: fine-tune code LLMs on your own repositories."""

__version__ = "0.2.0"
