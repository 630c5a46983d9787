"""Optional answer generation with vLLM (`evaluation.backend`), where the vllm package and a CUDA GPU are present.

vLLM gets the very prompt token ids the transformers path uses and the same greedy decoding and stop tokens, and its
answers go through the same parser and scorer. The adapter is served as a LoRA on the base (4-bit through vLLM's
bitsandbytes loader when the config quantizes), the baseline is the same engine without it. vLLM's kernels round
differently from the ones training used, so its answers can differ where two tokens nearly tie: the default
backend stays transformers, and `auto` is the opt-in for speed.
"""

from __future__ import annotations

import gc
from typing import Any

import torch

from trainer.config import Config
from trainer.errors import TrainerError
from trainer.evaluation.generation import Decoding
from trainer.model import base_model_path
from trainer.precision import resolve_precision, torch_dtype_name
from trainer.speedups import cannot_run


def generation_backend(setting: str) -> str:
    """`transformers` or `vllm`: `auto` takes vllm where it can run; `vllm` where it cannot is an error."""
    why = cannot_run("vllm")
    if setting == "auto":
        return "transformers" if why else "vllm"
    if setting == "vllm" and why:
        raise TrainerError(f"evaluation.backend=vllm: {why}; use transformers, or auto to take vllm where it can run")
    return setting


# vLLM's LoRAConfig accepts only these max_lora_rank values (vllm.config.lora.MaxLoRARanks).
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def lora_rank_slot(r: int) -> int:
    """The smallest rank vLLM accepts that holds an adapter of rank `r` (r=48 runs in the 64 slot)."""
    fitting = [rank for rank in VLLM_LORA_RANKS if rank >= r]
    if not fitting:
        raise TrainerError(f"model.lora.r={r}: vLLM serves LoRA ranks up to {VLLM_LORA_RANKS[-1]}; use transformers")
    return fitting[0]


def engine_args(config: Config, evaluated: str) -> dict[str, Any]:
    """The arguments vLLM's engine gets: the adapter `evaluated` on its base (4-bit through vLLM's bitsandbytes loader
    when training quantized it), or the model folder `--model` named; an explicit memory share, and vLLM's own
    decoding defaults rather than the model's generation_config.json (Decoding sets every value it uses)."""
    ev, model = config.evaluation, config.model
    adapter = None if ev.model else evaluated
    on_base = ev.model in (None, "base")
    return {
        "model": base_model_path(model) if on_base else ev.model,
        "revision": model.revision if on_base and model.tiny is None else None,
        "tokenizer": evaluated if adapter else None,  # the checkpoint's tokenizer, as the transformers path loads it
        "dtype": torch_dtype_name(resolve_precision(config.training.precision)),
        "quantization": "bitsandbytes" if on_base and model.quantization else None,
        "enable_lora": adapter is not None,
        "max_lora_rank": lora_rank_slot(model.lora.r),
        "gpu_memory_utilization": ev.vllm_gpu_memory_utilization,
        "generation_config": "vllm",
        "trust_remote_code": model.trust_remote_code,
        "seed": config.training.seed,
    }


def release_gpu_memory() -> int:
    """Free what earlier stages of this process held on the GPU before vLLM measures what it may take; returns the
    bytes still allocated (0 when the caller dropped every model)."""
    gc.collect()
    torch.cuda.empty_cache()
    return torch.cuda.memory_allocated() if torch.cuda.is_available() else 0


def vllm_answers(
    config: Config, evaluated: str, prompt_ids: list[list[int]], stop_ids: list[int]
) -> dict[str, list[str]]:
    """Greedy answers to each prompt: `finetuned` (the adapter `evaluated`, or the model folder `--model` named)
    and, with `evaluation.baseline`, `baseline` (the base without the adapter)."""
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    held = release_gpu_memory()
    if held:
        print(f"note: {held / 2**30:.1f} GiB still allocated on the GPU before vLLM starts")
    args = engine_args(config, evaluated)
    llm = LLM(**args)
    sampling = SamplingParams(**Decoding.of(config.evaluation).vllm_kwargs(), stop_token_ids=stop_ids)
    requests = [{"prompt_token_ids": ids} for ids in prompt_ids]

    def answer(lora) -> list[str]:
        return [output.outputs[0].text for output in llm.generate(requests, sampling, lora_request=lora)]

    adapter = evaluated if args["enable_lora"] else None
    answers = {"finetuned": answer(LoRARequest("finetuned", 1, adapter) if adapter else None)}
    if config.evaluation.baseline:
        answers["baseline"] = answer(None)
    return answers
