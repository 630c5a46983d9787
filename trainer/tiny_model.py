"""Tiny models of each supported family, built locally, so the whole pipeline runs offline on a CPU.

Weights are random (seeded); the tokenizer is a byte-level BPE trained on a small shipped corpus, with the family's
special tokens and the family's own chat template: the one TRL ships (`trl/chat_templates/`) where TRL knows the
family, else `assets/family_templates/`. The default, Qwen 2.5 (Qwen2 architecture), gets Qwen 2.5's template, for
which TRL swaps in its masked training variant, so the loss mask in debug runs is the one production runs get.
Gemma 3's, Phi-3's and Mistral's real tokenizers are SentencePiece: their stand-ins are byte-level BPE split with
Llama 3's pattern, so what is tested is the template and its special tokens, not the tokenizer algorithm. Built once
per spec into `model.cache_dir/tiny-<hash>`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
import trl
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast

from trainer.config import TinyModelSpec
from trainer.model_cache import build_once
from trainer.precision import DTYPES

BUILDER_VERSION = 2
CORPUS = Path(__file__).parent / "assets" / "tiny_tokenizer_corpus.txt"
TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
FAMILY_TEMPLATES = Path(__file__).parent / "assets" / "family_templates"
QWEN25_TEMPLATE = TRL_TEMPLATES / "qwen2_5.jinja"
# The pre-tokenizer pattern of Llama 3 (Qwen 2 differs only in splitting digits one by one): newlines stay one
# piece ("\n\n"), so a generation prompt ending in one tokenizes as the conversation does.
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class Family:
    """What a tiny model of a family copies from the real one: architecture, template, tokens and stop tokens."""

    architecture: str  # a transformers model class; its config class is `config_class`
    config_class: str
    template: Path
    special_tokens: tuple[str, ...]  # special, in this order from id 0
    eos: str
    pad: str | None = None  # None: the real tokenizer has none (load_tokenizer then pads with eos)
    bos: str | None = None
    added_tokens: tuple[str, ...] = ()  # plain added tokens (not special), as the real tokenizer has them
    stops: tuple[str, ...] = ()  # generation_config's eos ids besides `eos`, as the real model's
    gpt2_split: bool = False  # the GPT-2 pattern ByteLevel applies by default instead of LLAMA3_SPLIT
    config: tuple[tuple[str, object], ...] = ()  # config values the family needs beyond the spec's shape


CHATML = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
QWEN_TOOLS = ("<tool_call>", "</tool_call>")
FAMILIES = {
    "qwen2.5": Family("Qwen2ForCausalLM", "Qwen2Config", QWEN25_TEMPLATE, CHATML, "<|im_end|>", "<|endoftext|>",
                      added_tokens=QWEN_TOOLS, stops=("<|endoftext|>",), gpt2_split=True),
    "qwen3": Family("Qwen3ForCausalLM", "Qwen3Config", TRL_TEMPLATES / "qwen3.jinja", CHATML, "<|im_end|>",
                    "<|endoftext|>", added_tokens=(*QWEN_TOOLS, "<think>", "</think>"), stops=("<|endoftext|>",)),
    "llama3": Family("LlamaForCausalLM", "LlamaConfig", TRL_TEMPLATES / "llama3.jinja",
                     ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
                     "<|eot_id|>", bos="<|begin_of_text|>", stops=("<|end_of_text|>",)),
    "gemma3": Family("Gemma3ForCausalLM", "Gemma3TextConfig", TRL_TEMPLATES / "gemma3.jinja",
                     ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"), "<eos>", "<pad>", bos="<bos>",
                     stops=("<end_of_turn>",), config=(("query_pre_attn_scalar", 16), ("sliding_window", 512))),
    "phi3": Family("Phi3ForCausalLM", "Phi3Config", TRL_TEMPLATES / "phi3.jinja",
                   ("<unk>", "<s>", "</s>", "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
                   "<|endoftext|>", "<|endoftext|>", bos="<s>", stops=("<|assistant|>", "<|end|>")),
    "mistral": Family("MistralForCausalLM", "MistralConfig", FAMILY_TEMPLATES / "mistral.jinja",
                      ("<unk>", "<s>", "</s>", "[INST]", "[/INST]"), "</s>", bos="<s>"),
    "smollm2": Family("LlamaForCausalLM", "LlamaConfig", FAMILY_TEMPLATES / "smollm2.jinja", CHATML, "<|im_end|>",
                      "<|im_end|>", bos="<|im_start|>", gpt2_split=True),
}  # fmt: skip


def _fingerprint(spec: TinyModelSpec, template: str, corpus: str) -> str:
    payload = json.dumps([BUILDER_VERSION, spec.model_dump(), template, corpus], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _build_tokenizer(spec: TinyModelSpec, family: Family, template: str, corpus: str) -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=family.gpt2_split)
    split = pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated")
    backend.pre_tokenizer = byte_level if family.gpt2_split else pre_tokenizers.Sequence([split, byte_level])
    backend.decoder = decoders.ByteLevel()
    bpe = trainers.BpeTrainer(
        vocab_size=spec.vocab_size - len(family.added_tokens),
        special_tokens=list(family.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus.splitlines() + template.splitlines(), bpe)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=family.bos,
        eos_token=family.eos,
        pad_token=family.pad,
        model_max_length=spec.max_position_embeddings,
    )
    tokenizer.add_tokens(list(family.added_tokens))
    tokenizer.chat_template = template
    return tokenizer


def _model_config(spec: TinyModelSpec, family: Family, tokenizer: PreTrainedTokenizerFast):
    config_class = getattr(transformers, family.config_class)
    # Qwen 3's and Gemma 3's head_dim defaults to the real model's (128, 256), not hidden_size / heads.
    shape = {"head_dim": spec.hidden_size // spec.num_attention_heads}
    if "head_dim" not in inspect.signature(config_class.__init__).parameters:
        shape = {}
    return config_class(
        vocab_size=spec.model_vocab_size or len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        **shape,
        max_position_embeddings=spec.max_position_embeddings,
        initializer_range=spec.initializer_range,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **dict(family.config),
    )


def build_tiny_model(spec: TinyModelSpec, cache_dir: Path) -> Path:
    """Return the folder of the tiny model for `spec`, building it on first use."""
    family = FAMILIES[spec.family]
    template = family.template.read_text(encoding="utf-8")
    corpus = CORPUS.read_text(encoding="utf-8")
    target = cache_dir / f"tiny-{_fingerprint(spec, template, corpus)}"
    return build_once(target, lambda folder: _write_tiny_model(spec, family, template, corpus, folder))


def _write_tiny_model(spec: TinyModelSpec, family: Family, template: str, corpus: str, folder: Path) -> None:
    tokenizer = _build_tokenizer(spec, family, template, corpus)
    if spec.model_vocab_size is not None and spec.model_vocab_size < len(tokenizer):
        raise ValueError(f"model_vocab_size {spec.model_vocab_size} is below the tokenizer's {len(tokenizer)} tokens")
    config = _model_config(spec, family, tokenizer)
    torch.manual_seed(spec.seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(DTYPES[spec.dtype])  # built in its dtype: a 7B shape in fp32 would need 30 GB of memory
    try:
        model = getattr(transformers, family.architecture)(config)
    finally:
        torch.set_default_dtype(default)
    stops = [tokenizer.eos_token_id, *tokenizer.convert_tokens_to_ids(list(family.stops))]
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=stops, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
