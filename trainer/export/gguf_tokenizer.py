"""The tokenizer as GGUF metadata: vocabulary, token types, merges, pre-tokenizer name, special ids, chat template.

Only byte-level BPE tokenizers (Qwen2, Llama 3, SmolLM2, GPT-2, the tiny models of every family) are written;
SentencePiece-style ones (the real Gemma, Mistral and Phi-3 tokenizers: "▁" pieces, byte fallback) are refused
naming their kind. The pre-tokenizer is named from the structure of the pre-tokenizer the model's tokenizer really
runs (transformers 5 builds Qwen2's, for one, from its class, whatever `tokenizer.json` says), matched exactly
against the splits llama.cpp implements under that name; anything else is refused, because llama.cpp given a wrong
or missing name splits text differently from training and nothing fails, it only generates worse. The one
normalizer allowed is Qwen2's NFC, which llama.cpp's converter drops too: text that is not already NFC can tokenize
differently there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf
from gguf import TokenType
from transformers import AutoTokenizer
from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

from trainer.errors import TrainerError
from trainer.export.ollama import adds_bos, chat_format

# The pre-tokenizer steps (type and the settings that change the split) -> llama.cpp's name for that split. The
# regexes are transformers' own, which are what its GGUF reader applies for those names.
_BYTE_LEVEL = ("ByteLevel", False, True)  # add_prefix_space, use_regex (the GPT-2 split)
PRE_TOKENIZERS: dict[tuple[tuple[Any, ...], ...], str] = {
    (_BYTE_LEVEL,): "gpt-2",
    (("Digits", True), _BYTE_LEVEL): "smollm",
    **{
        (("Split", GGUF_PRE_TOKENIZER_SPLITS[name], "Isolated", False), ("ByteLevel", False, False)): name
        for name in ("qwen2", "llama-bpe")
    },
}


def _step(step: dict[str, Any]) -> tuple[Any, ...]:
    kind = step["type"]
    if kind == "ByteLevel":
        return (kind, step.get("add_prefix_space", True), step.get("use_regex", True))
    if kind == "Digits":
        return (kind, step.get("individual_digits", False))
    if kind == "Split":
        return (kind, step["pattern"].get("Regex", step["pattern"].get("String")), step["behavior"], step["invert"])
    return (kind, json.dumps(step, sort_keys=True))


def pre_tokenizer_name(tokenizer_json: dict[str, Any]) -> str:
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = tuple(_step(s) for s in (pre["pretokenizers"] if pre.get("type") == "Sequence" else [pre]))
    name = PRE_TOKENIZERS.get(steps)
    if name is None or tokenizer_json.get("normalizer") not in (None, {"type": "NFC"}):
        raise TrainerError(
            f"GGUF export: the tokenizer's pre-tokenizer {json.dumps(pre)[:200]} (normalizer "
            f"{json.dumps(tokenizer_json.get('normalizer'))[:80]}) matches none llama.cpp implements here "
            f"({', '.join(sorted(PRE_TOKENIZERS.values()))}); a wrong name would degrade generation silently"
        )
    return name


def vocabulary(tokenizer: Any, vocab_size: int) -> tuple[list[str], list[int]]:
    """Every id's token and llama.cpp token type, as llama.cpp's converter assigns them: added special tokens are
    CONTROL, other added ones USER_DEFINED (matched whole in text), embedding rows past the tokenizer UNUSED."""
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    if len(by_id) > vocab_size:
        raise TrainerError(f"GGUF export: the tokenizer has {len(by_id)} tokens, the model only {vocab_size} rows")
    tokens, types = [], []
    for index in range(vocab_size):
        if index in added:
            tokens.append(added[index].content)
            types.append(TokenType.CONTROL if added[index].special else TokenType.USER_DEFINED)
        elif index in by_id:
            tokens.append(by_id[index])
            types.append(TokenType.NORMAL)
        else:
            tokens.append(f"[PAD{index}]")
            types.append(TokenType.UNUSED)
    return tokens, [int(t) for t in types]


def add_tokenizer(writer: gguf.GGUFWriter, folder: Path, vocab_size: int) -> None:
    """Write the tokenizer of the exported `folder` into `writer`'s metadata."""
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer_json = json.loads(tokenizer.backend_tokenizer.to_str())  # what it runs, not only what the file says
    model, decoder = tokenizer_json["model"], (tokenizer_json.get("decoder") or {}).get("type")
    if model["type"] != "BPE" or model.get("byte_fallback") or decoder != "ByteLevel":
        # Real Gemma, Mistral and Phi-3 tokenizers: BPE over "▁"-spelled pieces, unknown bytes as <0xNN> tokens.
        # llama.cpp keeps those as a `llama` (SentencePiece) vocabulary with scores, which is not written here.
        kind = model["type"]
        if kind == "BPE":
            kind = "SentencePiece-style BPE" + (" with byte fallback" if model.get("byte_fallback") else "")
        raise TrainerError(
            f"GGUF export: only byte-level BPE tokenizers are written (llama.cpp's gpt2 vocabulary); this one is "
            f"{kind} (model {model['type']}, decoder {decoder}), which llama.cpp stores as a SentencePiece vocabulary "
            "that this exporter does not write; use export.formats=[safetensors]"
        )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(tokenizer_json))
    tokens, types = vocabulary(tokenizer, vocab_size)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model["merges"]])
    for add, token_id in (
        (writer.add_bos_token_id, tokenizer.bos_token_id),
        (writer.add_eos_token_id, tokenizer.eos_token_id),
        (writer.add_unk_token_id, tokenizer.unk_token_id),
        (writer.add_pad_token_id, tokenizer.pad_token_id),
    ):
        if token_id is not None:
            add(token_id)
    ids = tokenizer("x")["input_ids"]
    writer.add_add_bos_token(adds_bos(tokenizer))
    writer.add_add_eos_token(tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id)
    template = tokenizer.chat_template
    if not isinstance(template, str):
        raise TrainerError(f"GGUF export: {folder} has no chat template to write")
    writer.add_eot_token_id(tokenizer.convert_tokens_to_ids(chat_format(tokenizer).end_of_turn))
    writer.add_chat_template(template)
