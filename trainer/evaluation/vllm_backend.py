"""Optional answer generation with vLLM (`evaluation.backend`), where the vllm package and a CUDA GPU are present.

vLLM gets the very prompt token ids the transformers path uses and the same greedy decoding and stop tokens, and its
answers go through the same parser and scorer. The adapter is served as a LoRA on the base (4-bit through vLLM's
bitsandbytes loader when the config quantizes), the baseline is the same engine without it. vLLM's kernels round
differently from the ones training used, so its answers can differ where two tokens nearly tie: the default
backend stays transformers, and `auto` is the opt-in for speed.
"""

from __future__ import annotations

import gc

import torch

from trainer.config import Config
from trainer.errors import TrainerError
from trainer.model import base_model_path, resolve_precision, torch_dtype_name
from trainer.speedups import cannot_run


def generation_backend(setting: str) -> str:
    """`transformers` or `vllm`: `auto` takes vllm where it can run; `vllm` where it cannot is an error."""
    why = cannot_run("vllm")
    if setting == "auto":
        return "transformers" if why else "vllm"
    if setting == "vllm" and why:
        raise TrainerError(f"evaluation.backend=vllm: {why}; use transformers, or auto to take vllm where it can run")
    return setting


def vllm_answers(
    config: Config, evaluated: str, prompt_ids: list[list[int]], stop_ids: list[int]
) -> dict[str, list[str]]:
    """Greedy answers to each prompt: `finetuned` (the adapter `evaluated`, or the model folder `--model` named)
    and, with `evaluation.baseline`, `baseline` (the base without the adapter)."""
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    gc.collect()  # the caller dropped its transformers model: give vLLM the GPU memory it held
    torch.cuda.empty_cache()
    ev, model = config.evaluation, config.model
    adapter = None if ev.model else evaluated
    on_base = ev.model in (None, "base")
    llm = LLM(
        model=base_model_path(model) if on_base else ev.model,
        revision=model.revision if on_base and model.tiny is None else None,
        tokenizer=evaluated if adapter else None,  # the checkpoint's tokenizer, as the transformers path loads it
        dtype=torch_dtype_name(resolve_precision(config.training.precision)),
        quantization="bitsandbytes" if on_base and model.quantization else None,
        enable_lora=adapter is not None,
        max_lora_rank=model.lora.r,
        trust_remote_code=model.trust_remote_code,
        seed=config.training.seed,
    )
    sampling = SamplingParams(temperature=0.0, max_tokens=ev.max_new_tokens, stop_token_ids=stop_ids)
    requests = [{"prompt_token_ids": ids} for ids in prompt_ids]

    def answer(lora) -> list[str]:
        return [output.outputs[0].text for output in llm.generate(requests, sampling, lora_request=lora)]

    answers = {"finetuned": answer(LoRARequest("finetuned", 1, adapter) if adapter else None)}
    if ev.baseline:
        answers["baseline"] = answer(None)
    return answers
