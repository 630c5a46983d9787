"""The one dtype table: the config's spellings (bf16, fp16, fp32) to torch's, and what `precision: auto` means."""

from __future__ import annotations

import torch

# The one dtype table: config's spellings (bf16, fp16, fp32) to torch's.
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def resolve_precision(precision: str) -> str:
    """`auto`: bf16 on a GPU that has it, else fp32; any other value as it is."""
    if precision != "auto":
        return precision
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def torch_dtype_name(name: str) -> str:
    """`bf16` → `bfloat16`: the spelling config.json, vLLM and safetensors metadata use."""
    return str(DTYPES[name]).removeprefix("torch.")
