"""trainer: finetune an open LLM with LoRA/QLoRA on one Go framework's documentation and code."""

__version__ = "0.1.0"
