"""Built-in export check: the written folder's logits against PEFT's base+adapter on fixed prompts.

Both run in fp32 on the same base variant (original or NF4 round-trip), loaded one after the other, so peak memory
is one fp32 model. The measure is max |Δlogit| / max |logit|; the bound per export dtype is its rounding of the
weights (measured on the tiny model: fp32 ≈ 1e-6, bf16 ≈ 1e-2), with headroom, and far below what a wrong merge
(a missed layer, a wrong scaling) produces.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainer.config import ModelConfig
from trainer.errors import TrainerError
from trainer.model import load_base_model, load_peft_model

TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 6e-2}
PROMPTS = [
    [{"role": "user", "content": "How do I register a GET route?"}],
    [{"role": "system", "content": "Answer with Go code."}, {"role": "user", "content": "Show a middleware."}],
    [{"role": "user", "content": "What does the package do?"}],
]


def _logits(model, encoded: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(**inputs, use_cache=False).logits.float() for inputs in encoded]


def reference_model(model_config: ModelConfig, checkpoint: Path, round_trip, quantized_keys: set[str]):
    """fp32 base (NF4 round-tripped where the merge did so) with the adapter applied by PEFT, unmerged."""
    base = load_base_model(model_config, torch.float32, quantized=False)
    if round_trip is not None:
        with torch.no_grad():
            for name, parameter in base.named_parameters():
                if name in quantized_keys:
                    parameter.copy_(round_trip(parameter))
    return load_peft_model(base, checkpoint, model_config)


def verify_export(folder: Path, reference_factory, dtype: str) -> float:
    """Relative logit difference between the exported folder and the reference; raises past the dtype's bound."""
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    encoded = [
        tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        for prompt in PROMPTS
    ]
    reference = reference_factory()
    expected = _logits(reference, encoded)
    del reference
    merged = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, local_files_only=True, use_safetensors=True
    ).eval()
    got = _logits(merged, encoded)
    del merged
    scale = max(float(e.abs().max()) for e in expected)
    difference = max(float((g - e).abs().max()) for g, e in zip(got, expected, strict=True)) / scale
    if difference > TOLERANCE[dtype]:
        raise TrainerError(
            f"export verification failed: merged logits differ from base+adapter by {difference:.2e} of the "
            f"largest logit (bound for {dtype}: {TOLERANCE[dtype]:.0e}); the folder was not published"
        )
    return difference
