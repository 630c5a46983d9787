"""Each GGUF read back by transformers' GGUF reader, checked against the merged safetensors it was written from.

The model: transformers' config from the file (`AutoConfig.from_pretrained(..., gguf_file=)`), its GGUF-to-model
tensor names and per-architecture fix-ups (`get_gguf_hf_weights_map`, the tensor processors that undo llama.cpp's
query/key permutation and Gemma's norm + 1) and the `gguf` package's dequantization: what
`from_pretrained(..., gguf_file=)` does, but streamed module by module like `verify.py`'s models, so memory is one
tensor, not the model in fp32. Two values transformers' config mapping does not read, but llama.cpp does, are set
from the file as llama.cpp reads them (`_llama_cpp_reads`: Qwen 3's head size, Gemma 3's query scale); else
transformers would build, from a file llama.cpp runs correctly, a model of another shape or scale.

The tokenizer: transformers rebuilds it from the file's metadata alone; it must encode `ROUND_TRIP_TEXTS` to exactly
the ids of the exported tokenizer (a wrong pre-tokenizer name or token type shows here).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGUFReader, dequantize
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig
from transformers.modeling_gguf_pytorch_utils import (
    TENSOR_PROCESSORS,
    TensorProcessor,
    get_gguf_hf_weights_map,
    load_gguf_checkpoint,
)

from trainer.errors import TrainerError
from trainer.export.gguf_file import gemma3_query_scalar
from trainer.export.verify import (
    attach_weights,
    execution_device,
    parameter_sources,
    prompt_logits,
    relative_difference,
    skeleton,
)

# max |Δlogit| / max |logit| against the merged safetensors, per GGUF type, with headroom over what was measured
# (docs/export.md, tiny model / SmolLM2-135M: f16 3.7e-3 / 1.1e-3, bf16 2.0e-2 / 7.1e-3, q8_0 7.4e-2 / 3.8e-2).
# 4-bit types have no bound: they move logits by 0.73 (tiny, random weights) and 0.53 (SmolLM2) of the largest, 16x
# q8_0 as four bits fewer should; that is measured and written in the card, what it costs in answers needs an eval.
GGUF_TOLERANCE: dict[str, float | None] = {"f16": 1e-2, "bf16": 6e-2, "q8_0": 0.2, "q4_0": None, "q4_1": None}


class GgufWeights(Mapping[str, torch.Tensor]):
    """Parameter name -> its tensor, dequantized from the GGUF file (memory-mapped) each time it is asked for."""

    def __init__(self, path: Path, model: nn.Module):
        self.reader = GGUFReader(path)
        config = load_gguf_checkpoint(str(path))["config"]
        # Both by the file's architecture, not the model transformers builds from it: a Mistral file is llama.cpp's
        # `llama` (query/key rows permuted, Llama's tensor names), built as Mistral when it is named "mistral"
        # (transformers' own loading then fails: gguf has no `mistral`); Gemma 3's is built as gemma3_text.
        architecture = self.reader.fields["general.architecture"].contents()
        self.processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=config)
        names = get_gguf_hf_weights_map(model, self.processor, model_type=architecture)
        self.tensors = {names[t.name]: t for t in self.reader.tensors if t.name in names}
        self.sources = parameter_sources(model, self.tensors)

    def __getitem__(self, name: str) -> torch.Tensor:
        tensor = self.tensors[self.sources[name]]
        weights = dequantize(tensor.data, tensor.tensor_type)
        weights = self.processor.process(weights=weights, name=tensor.name).weights
        return torch.from_numpy(np.array(weights, dtype=np.float32))

    def __iter__(self) -> Iterator[str]:
        return iter(self.sources)

    def __len__(self) -> int:
        return len(self.sources)


def _llama_cpp_reads(fields: dict[str, Any]) -> dict[str, Any]:
    """Config values llama.cpp takes from the file where transformers' GGUF config mapping leaves the config class's
    default, which is one checkpoint's value: Qwen 3's head size (`attention.key_length`; Qwen3Config says 128, as
    every released Qwen 3 has) and Gemma 3's query scale, which llama.cpp derives from the head size
    (Gemma3TextConfig says 256, as Gemma 3 1B to 12B have). Without them transformers builds another model than the
    one llama.cpp runs from the same file."""
    arch = fields["general.architecture"]
    key = {name.removeprefix(f"{arch}."): value for name, value in fields.items()}
    hidden, heads = key["embedding_length"], key["attention.head_count"]
    head_dim = key.get("attention.key_length", hidden // heads)  # llama.cpp's default where the key is missing
    if arch == "qwen3":
        return {"head_dim": head_dim}
    if arch == "gemma3":
        return {"query_pre_attn_scalar": gemma3_query_scalar(hidden, heads, head_dim, key["block_count"])}
    return {}


def gguf_config(path: Path) -> PretrainedConfig:
    """The model config transformers reads from the GGUF file, with what llama.cpp reads there besides."""
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    fields = {name: f.contents() for name, f in GGUFReader(path).fields.items() if not name.startswith("tokenizer.")}
    for name, value in _llama_cpp_reads(fields).items():
        setattr(config, name, value)
    return config


def gguf_model(path: Path, device: torch.device | None = None) -> nn.Module:
    """The model transformers reads from the GGUF file, its weights streamed module by module in fp32."""
    model = skeleton(gguf_config(path))
    return attach_weights(model, GgufWeights(path, model), device or execution_device())


_PIECES = [
    "Hello, world!",
    "func (r *Router) GET(path string, h HandlerFunc) {\n\tr.handle(http.MethodGet, path, h)\n}",
    'package main\n\nimport (\n\t"fmt"\n\t"net/http"\n)\n',
    'if err != nil {\n\t\treturn fmt.Errorf("open %s: %w", name, err)\n\t}',
    "for i := 0; i < 1000; i++ { sum += i * 31337 }",
    "def f(x):\n    return {'a': [1, 2, 3], \"b\": None}\n",
    "SELECT id, name FROM users WHERE age >= 21 ORDER BY name;",
    "   leading spaces and trailing   ",
    "tabs\t\tand\n\n\nnewlines\r\n",
    "          ten spaces",
    "Ünïcödé: naïve café, Straße, Ελληνικά, русский, 中文字符, 日本語のテキスト, 한국어",
    "emoji 🚀🔥👍🏽 and symbols ∑∫√≈≠ ©®™ — “quotes” ‘single’ …",
    "numbers 0 7 42 123 4567 89012 3.14159 -2.5e-10 0x1F 1_000_000",
    "<|im_start|>user\nHow do I register a route?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|><|im_end|><|im_start|>",
    '<tool_call>{"name": "get"}</tool_call>',
    "don't won't it's we're they've I'm you'll he'd",
    "CamelCaseIdentifiers snake_case_names SCREAMING_CASE kebab-case-words",
    "https://example.com/path?query=1&x=y#frag",
    "// Package chi is a lightweight, idiomatic router.\n/* block comment */",
    'r.Use(middleware.Logger)\nr.Get("/", func(w http.ResponseWriter, r *http.Request) {\n\tw.Write([]byte("hi"))})',
    "a\u00a0non-breaking\u2009thin\u200bzero-width space",
    "MiXeD cAsE wOrDs AND ALL CAPS",
    "!!!???...,,,;;;:::",
    "x" * 50,
]


def _texts() -> list[str]:
    """200 distinct strings: the pieces alone, after a space, joined in pairs, inside a chat turn, and changed."""
    pieces = _PIECES
    rotated = pieces[7:] + pieces[:7]
    turn = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n{}"
    texts = [*pieces, *(" " + p for p in pieces), *(a + b for a, b in zip(pieces, rotated, strict=True))]
    texts += [a + "\n" + b for a, b in zip(rotated, pieces, strict=True)]
    texts += [turn.format(p, q) for p, q in zip(pieces, rotated, strict=True)]
    texts += [p.upper() for p in pieces] + [p[::-1] for p in pieces] + [p * 3 for p in pieces]
    texts += [p.title() for p in pieces] + [p + "\n\n" for p in pieces]
    return list(dict.fromkeys(texts))[:200]


ROUND_TRIP_TEXTS = _texts()


def round_trip_mismatches(folder: Path, gguf_name: str) -> list[str]:
    """The texts the GGUF's tokenizer, as transformers rebuilds it, encodes differently from the exported one."""
    ours = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    theirs = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_name, local_files_only=True)
    return [
        text
        for text in ROUND_TRIP_TEXTS
        if ours(text, add_special_tokens=True)["input_ids"] != theirs(text, add_special_tokens=True)["input_ids"]
    ]


def verify_gguf(path: Path, gguf_type: str, batch: dict[str, torch.Tensor], expected: list[torch.Tensor]) -> float:
    """Check one GGUF: its tokenizer round trip, then its logits on the verification prompts against `expected`
    (the merged safetensors'); returns the relative logit difference, raises past the type's bound."""
    mismatches = round_trip_mismatches(path.parent, path.name)
    if mismatches:
        raise TrainerError(
            f"GGUF verification failed: {path.name}'s tokenizer, as transformers reads it, encodes "
            f"{len(mismatches)} of {len(ROUND_TRIP_TEXTS)} texts differently, first {mismatches[0][:60]!r}"
        )
    device = execution_device()
    difference = relative_difference(prompt_logits(gguf_model(path, device), batch, device), expected)
    bound = GGUF_TOLERANCE[gguf_type]
    if bound is not None and difference > bound:
        raise TrainerError(
            f"GGUF verification failed: {path.name}'s logits differ from the merged model's by {difference:.2e} of "
            f"the largest logit (bound for {gguf_type}: {bound:.0e}); the folder was not published"
        )
    return difference
