"""Optional speed features: each is used only where it can run; forcing one where it cannot is an error.

- flash-attention 2 (`model.attn_implementation`): needs the `flash_attn` package and a CUDA GPU. `auto` takes it
  where both are present, else SDPA; with it, `training.packing: auto` packs (its varlen kernels skip the pairs of
  different conversations in a packed row).
- Liger kernels (`training.liger_kernel`): RMSNorm, SwiGLU and RoPE in Triton; need the `liger_kernel` package and a
  CUDA GPU. The fused linear cross-entropy is TRL's own chunked LM head, always on (only assistant positions are
  projected on Triton devices), so Liger's is not used.
- `torch.compile` (`training.torch_compile`): off by default; it runs on CPU and GPU, but compiling each new batch
  shape costs more than it saves in a short run (docs/benchmarks.md).
"""

from __future__ import annotations

import importlib.util
from typing import Literal

import torch

from trainer.config import ModelConfig, TrainingConfig
from trainer.errors import TrainerError, first_line


def cannot_run(package: str) -> str | None:
    """Why a CUDA-only package cannot run here, or None when it can. The package is imported, not only looked up:
    an install built for another torch or CUDA is present but fails to load, and `auto` must then go without it."""
    installed = importlib.util.find_spec(package) is not None
    if installed:
        try:
            importlib.import_module(package)
        except Exception as exc:  # ImportError, OSError (a missing .so), RuntimeError (a CUDA mismatch): all mean no
            return f"the {package} package is installed but cannot be loaded ({first_line(exc)})"
    if not torch.cuda.is_available():
        return "needs a CUDA GPU and this machine has none"
    return None if installed else f"the {package} package is not installed"


def attention_implementation(config: ModelConfig, strict: bool = True) -> Literal["sdpa", "eager", "flash_attention_2"]:
    """The attention kernel to load the model with: `auto` is flash-attention 2 where it can run, else SDPA.

    An explicit flash_attention_2 that cannot run here is an error for training (`strict`, where it was asked for
    speed); evaluation and export fall back to SDPA with a note, so a config trained on a GPU exports on a CPU.
    """
    if config.attn_implementation == "auto":
        return "flash_attention_2" if cannot_run("flash_attn") is None else "sdpa"
    why = cannot_run("flash_attn") if config.attn_implementation == "flash_attention_2" else None
    if why and strict:
        raise TrainerError(f"model.attn_implementation=flash_attention_2: {why}; use auto to pick what runs here")
    if why:
        print(f"note: model.attn_implementation=flash_attention_2: {why}; loading with sdpa")
        return "sdpa"
    return config.attn_implementation


def use_liger(training: TrainingConfig) -> bool:
    """Whether to apply Liger's kernels: `auto` where they can run; `true` where they cannot is an error."""
    why = cannot_run("liger_kernel")
    if training.liger_kernel == "auto":
        return why is None
    if training.liger_kernel and why:
        raise TrainerError(f"training.liger_kernel=true: {why}; use auto to go without where it cannot run")
    return training.liger_kernel
