"""The model card (README.md) a checkpoint and an exported model carry: what it was trained from and on, how far,
how well, and how to load it. TRL's placeholder named no base model ("fine-tuned version of [None]").

A value that was not measured is `—` with the reason, never left out: a lone good-looking number misleads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainer.checkpoints.folder import ADAPTER_CONFIG, TRAINER_STATE
from trainer.config import Config

CARD = "README.md"  # where the Hugging Face Hub and readers look
# The training metrics a checkpoint's card quotes from trainer_state.json's log, newest value of each.
TRAINING_METRICS = {"loss": "training loss", "eval_loss": "validation loss", "mean_token_accuracy": "token accuracy"}


def format_counts(counts: dict[str, int] | None) -> str:
    """`train 80, validation 10, test 10`, or `—` where they are unknown."""
    return ", ".join(f"{name} {n}" for name, n in counts.items()) if counts else "— (no dataset manifest)"


def format_value(value: Any, why_missing: str) -> str:
    if value is None:
        return f"— ({why_missing})"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def loading_snippet(folder: str, adapter: bool) -> list[str]:
    """Markdown lines: the Python that loads the folder (a PEFT adapter over its base, or a merged model)."""
    if adapter:
        code = [
            "from peft import AutoPeftModelForCausalLM",
            "from transformers import AutoTokenizer",
            "",
            f"# the base model is the one {ADAPTER_CONFIG} names",
            f'model = AutoPeftModelForCausalLM.from_pretrained("{folder}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{folder}")',
        ]
    else:
        code = [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "",
            f'model = AutoModelForCausalLM.from_pretrained("{folder}", dtype="auto")',
            f'tokenizer = AutoTokenizer.from_pretrained("{folder}")',
        ]
    code += [
        "",
        'messages = [{"role": "user", "content": "How do I register a route?"}]',
        "inputs = tokenizer.apply_chat_template(",
        '    messages, add_generation_prompt=True, return_dict=True, return_tensors="pt"',
        ")",
        "answer = model.generate(**inputs, max_new_tokens=256)[0, inputs.input_ids.shape[1] :]",
        "print(tokenizer.decode(answer, skip_special_tokens=True))",
    ]
    return ["## Loading", "", "```python", *code, "```", ""]


def checkpoint_card(config: Config, folder: Path, data: dict[str, Any]) -> str:
    """The card of one training checkpoint: base, dataset hash and sizes, step, the latest logged metrics."""
    state_file = folder / TRAINER_STATE
    state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else {}
    latest: dict[str, Any] = {}
    for record in state.get("log_history", []):
        latest |= {key: record[key] for key in TRAINING_METRICS if key in record}
    steps, total = state.get("global_step"), state.get("max_steps")
    m = config.model
    base = f"`{m.name_or_path}`" + (" (built locally from model.tiny)" if m.tiny else "")
    quantized = f"QLoRA ({m.quantization.quant_type})" if m.quantization else "no quantization"
    rows = [
        ("base model", base),
        ("adapter", f"LoRA r={m.lora.r}, alpha={m.lora.alpha}, {quantized}"),
        ("data", f"content hash `{data.get('content_hash') or '—'}`; {format_counts(data.get('counts'))}"),
        ("steps", f"{steps} of {total}" if steps is not None else "— (no trainer_state.json)"),
        *(
            (label, format_value(latest.get(key), "none logged by this step: training.logging_steps"))
            for key, label in TRAINING_METRICS.items()
        ),
    ]
    return "\n".join(
        [
            f"# {config.training.run_name}: {folder.name}",
            "",
            f"A LoRA adapter checkpoint written by trainer while training `{config.model.name_or_path}`. The config "
            "it was trained with is `trainer_config.yaml` beside this file; the metrics log up to this step is "
            "`metrics.jsonl`. `trainer evaluate --checkpoint` scores it, `trainer export --checkpoint` merges it.",
            "",
            "| | |",
            "| --- | --- |",
            *(f"| {label} | {value} |" for label, value in rows),
            "",
            *loading_snippet(str(folder), adapter=True),
        ]
    )
