"""Decisions of the CUDA code paths that a machine without a GPU can see: where models are placed, which decoding
settings reach each generation backend, what vLLM's engine is given, and the refusal to train a real model on a CPU."""

import json
import shutil

import pytest
import torch

from tests.helpers import PRODUCTION_TINY
from trainer.config_file import load_config
from trainer.errors import TrainerError
from trainer.evaluation.generation import Decoding, build_prompts, generate
from trainer.evaluation.vllm_backend import engine_args, lora_rank_slot
from trainer.model import base_model_path, load_base_model, load_kwargs, load_tokenizer
from trainer.training.train import refuse_cpu_training


def test_every_model_load_lands_on_the_gpu_when_there_is_one(make_config):
    quantized = make_config()
    plain = make_config("model.quantization=null")
    for config, is_4bit in ((quantized, True), (plain, False)):
        on_gpu = load_kwargs(config.model, "folder", torch.bfloat16, quantized=True, cuda_device=3)
        assert on_gpu["device_map"] == {"": 3} and ("quantization_config" in on_gpu) == is_4bit
        assert (
            load_kwargs(config.model, "folder", torch.float32, quantized=False, cuda_device=None)["device_map"] is None
        )
    exported = load_kwargs(plain.model, "exported", torch.bfloat16, quantized=False, cuda_device=0)
    assert exported["device_map"] == {"": 0} and "quantization_config" not in exported


def test_both_backends_get_the_same_explicit_greedy_decoding():
    decoding = Decoding(max_new_tokens=40, repetition_penalty=1.1)
    hf, vllm = decoding.transformers_kwargs(), decoding.vllm_kwargs()
    assert (hf["max_new_tokens"], vllm["max_tokens"]) == (40, 40)
    assert hf["do_sample"] is False and hf["num_beams"] == 1 and vllm["temperature"] == 0.0
    assert hf["repetition_penalty"] == vllm["repetition_penalty"] == 1.1
    assert (vllm["presence_penalty"], vllm["frequency_penalty"], hf["no_repeat_ngram_size"]) == (0.0, 0.0, 0)


def test_a_base_models_generation_config_does_not_change_the_answers(make_config, tmp_path):
    """Qwen 2.5 ships sampling and a 1.05 repetition penalty in generation_config.json: our decoding overrides it."""
    config = make_config()
    folder = tmp_path / "base"
    shutil.copytree(base_model_path(config.model), folder)
    planted = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 5.0}
    (folder / "generation_config.json").write_text(json.dumps(planted))
    model_config = config.model.model_copy(update={"name_or_path": str(folder), "tiny": None, "quantization": None})
    model = load_base_model(model_config, torch.float32, quantized=False).eval()
    tokenizer = load_tokenizer(model_config)
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]
    rows = [{"id": "a", "messages": json.dumps(messages), "tools": ""}]
    prompts = build_prompts(tokenizer, rows)
    assert model.generation_config.repetition_penalty == 5.0
    with_planted = generate(model, tokenizer, prompts, Decoding(12), batch_size=1)
    model.generation_config = type(model.generation_config)()
    assert generate(model, tokenizer, prompts, Decoding(12), batch_size=1) == with_planted


def test_vllm_gets_a_rank_slot_it_accepts_an_explicit_memory_share_and_its_own_decoding_defaults(make_config):
    config = make_config("model.lora.r=48", "evaluation.vllm_gpu_memory_utilization=0.6", "training.precision=bf16")
    args = engine_args(config, "ckpt/checkpoint-20")
    assert (args["max_lora_rank"], args["enable_lora"], args["tokenizer"]) == (64, True, "ckpt/checkpoint-20")
    assert (args["gpu_memory_utilization"], args["generation_config"], args["dtype"]) == (0.6, "vllm", "bfloat16")
    assert args["quantization"] == "bitsandbytes"  # the 4-bit base training used
    assert [lora_rank_slot(r) for r in (1, 8, 9, 64, 300, 512)] == [8, 8, 16, 64, 320, 512]
    with pytest.raises(TrainerError, match="vLLM serves LoRA ranks up to 512"):
        lora_rank_slot(513)
    exported = engine_args(make_config("evaluation.model=outputs/models/run"), "outputs/models/run")
    assert (exported["model"], exported["enable_lora"], exported["quantization"]) == ("outputs/models/run", False, None)


def test_a_real_model_is_not_trained_on_a_cpu_unless_asked():
    production = load_config(PRODUCTION_TINY)
    real = production.model_copy(update={"model": production.model.model_copy(update={"tiny": None})})
    with pytest.raises(TrainerError, match=r"sees no CUDA GPU .*--set training\.allow_cpu=true"):
        refuse_cpu_training(real, cuda=False)
    refuse_cpu_training(real, cuda=True)
    refuse_cpu_training(production, cuda=False)  # the tiny model is meant for a CPU
    allowed = real.model_copy(update={"training": real.training.model_copy(update={"allow_cpu": True})})
    refuse_cpu_training(allowed, cuda=False)
