"""A tiny Qwen2-architecture model, built locally, so the whole pipeline runs offline on a CPU.

Weights are random (seeded); the tokenizer is a byte-level BPE trained on a small shipped corpus, with Qwen 2.5's
special tokens and Qwen 2.5's own chat template as TRL installs it (`trl/chat_templates/qwen2_5.jinja`). TRL swaps in
its masked training variant only for a template byte-identical to a known one, so the loss mask in debug runs is
the one production runs get. Built once per spec into `model.cache_dir/tiny-<hash>`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch
import trl
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
from transformers.utils import logging as hf_logging

from trainer.config import TinyModelSpec
from trainer.precision import DTYPES

BUILDER_VERSION = 1
CORPUS = Path(__file__).parent / "assets" / "tiny_tokenizer_corpus.txt"
QWEN25_TEMPLATE = Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ADDED_TOKENS = ["<tool_call>", "</tool_call>"]  # plain added tokens in Qwen 2.5, not special


def _fingerprint(spec: TinyModelSpec, template: str, corpus: str) -> str:
    payload = json.dumps([BUILDER_VERSION, spec.model_dump(), template, corpus], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _build_tokenizer(spec: TinyModelSpec, template: str, corpus: str) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    bpe = trainers.BpeTrainer(
        vocab_size=spec.vocab_size - len(ADDED_TOKENS),
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus.splitlines() + template.splitlines(), bpe)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=spec.max_position_embeddings,
    )
    tokenizer.add_tokens(ADDED_TOKENS)
    tokenizer.chat_template = template
    return tokenizer


def build_tiny_model(spec: TinyModelSpec, cache_dir: Path) -> Path:
    """Return the folder of the tiny model for `spec`, building it on first use."""
    template = QWEN25_TEMPLATE.read_text(encoding="utf-8")
    corpus = CORPUS.read_text(encoding="utf-8")
    target = cache_dir / f"tiny-{_fingerprint(spec, template, corpus)}"
    if (target / "config.json").is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(spec, template, corpus)
    if spec.model_vocab_size is not None and spec.model_vocab_size < len(tokenizer):
        raise ValueError(f"model_vocab_size {spec.model_vocab_size} is below the tokenizer's {len(tokenizer)} tokens")
    config = Qwen2Config(
        vocab_size=spec.model_vocab_size or len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        initializer_range=spec.initializer_range,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(spec.seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(DTYPES[spec.dtype])  # built in its dtype: a 7B shape in fp32 would need 30 GB of memory
    try:
        model = Qwen2ForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id], pad_token_id=tokenizer.pad_token_id
    )
    # Build beside the target and rename, so a crash or a concurrent build never leaves a half-written model.
    staging = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".building-"))
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar for writing one 1 MB shard is noise in front of `trainer train`
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    except OSError:
        if not (target / "config.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if bars:
            hf_logging.enable_progress_bar()
    return target
