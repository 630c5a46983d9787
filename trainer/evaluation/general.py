"""General ability kept: a small fixed set of prompts that are not about the framework, shipped with the package
(`trainer/assets/general_prompts.jsonl`), answered by every evaluated model with the test split's decoding and
scored by whether each answer has what a plain correct answer must have (the prompt's `expect` patterns, all of them,
case-insensitive). A finetuning that forgets how to answer plainly shows as a lower `general.pass_rate` than the
base's on the same prompts. The answers are in the report folder's `GENERAL_FILE`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from trainer.evaluation.generation import Prompt

GENERAL_PROMPTS = Path(__file__).resolve().parents[1] / "assets" / "general_prompts.jsonl"
GENERAL_FILE = "general.jsonl"


def general_prompts() -> tuple[list[Prompt], dict[str, list[str]]]:
    """The shipped prompts as one-turn conversations (no system turn: the model's own default applies), and each
    one's `expect` patterns by id."""
    prompts, expected = [], {}
    for line in GENERAL_PROMPTS.read_text(encoding="utf-8").splitlines():
        item = json.loads(line)
        reference = {"role": "assistant", "content": item["reference"]}
        prompts.append(Prompt(item["id"], [{"role": "user", "content": item["prompt"]}], reference, group="general"))
        expected[item["id"]] = item["expect"]
    return prompts, expected


def passes(answer: str, expect: list[str]) -> bool:
    return all(re.search(pattern, answer, re.IGNORECASE) for pattern in expect)


def general_records(
    prompts: list[Prompt], expected: dict[str, list[str]], answers: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """One record per prompt: the prompt, the reference answer, the patterns, and per model (`prediction`,
    `baseline`) its answer and whether it passed."""
    records = []
    for position, prompt in enumerate(prompts):
        record = {
            "id": prompt.id, "prompt": prompt.messages[-1]["content"], "reference": prompt.reference["content"],
            "expect": expected[prompt.id],
        }  # fmt: skip
        for model, texts in answers.items():
            record[model] = texts[position]
            record[f"{model}_passed"] = passes(texts[position], expected[prompt.id])
        records.append(record)
    return records


def general_score(records: list[dict[str, Any]], model: str) -> dict[str, Any]:
    """`{"n_examples", "pass_rate"}` of one model's answers."""
    passed = [record[f"{model}_passed"] for record in records]
    return {"n_examples": len(passed), "pass_rate": sum(passed) / len(passed) if passed else None}
