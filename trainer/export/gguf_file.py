"""GGUF files from the merged safetensors, for llama.cpp, Ollama and LM Studio, written with the `gguf` package.

The tensors are read back from the exported safetensors shards and written one at a time, in row blocks where the
type allows (every quantization here is per row), so memory stays near the merge's: one row block, or one
attention projection where llama.cpp's layout needs the whole tensor (Llama's query/key rows are permuted).

Types: `f16`, `bf16`, and the quantizations the `gguf` package can write, `q8_0`, `q4_0` and `q4_1`; the k-quants
(`q4_k_m`) only have a reader there, so they need llama.cpp's own `llama-quantize`. Norms and biases stay F32, as
llama.cpp's converter writes them; a weight whose rows do not split into 32-value blocks falls back to F16.

Architectures (`FAMILIES`) are laid out as llama.cpp's `convert_hf_to_gguf.py` lays them out, so llama.cpp runs them:
Qwen 2 and 3, Llama and Mistral (llama.cpp's `llama`), Phi-3 (its fused qkv and gate-up projections kept whole) and
Gemma 3 (norm weights stored + 1). A setting the file cannot state and llama.cpp would run differently (a sliding
window where llama.cpp has none, Gemma 3's fixed query scale, layer pattern and soft-capping, rope scaling) is
refused by name before anything is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf import LlamaFileType
from safetensors import safe_open
from transformers import AutoConfig, PretrainedConfig

from trainer import dotted
from trainer.errors import TrainerError
from trainer.export.gguf_tokenizer import add_tokenizer
from trainer.export.merge import BLOCK_BYTES, base_shards, read_tensor

GGUF_FILE = "model-{type}.gguf"  # one per `export.gguf_types` entry, beside the safetensors


@dataclass(frozen=True)
class GgufType:
    weights: Q  # matrices
    file_type: LlamaFileType
    head: Q  # the output head: kept at 8 bits under 4-bit types, as llama.cpp's quantizer keeps it above them


GGUF_TYPES = {
    "f16": GgufType(Q.F16, LlamaFileType.MOSTLY_F16, Q.F16),
    "bf16": GgufType(Q.BF16, LlamaFileType.MOSTLY_BF16, Q.BF16),
    "q8_0": GgufType(Q.Q8_0, LlamaFileType.MOSTLY_Q8_0, Q.Q8_0),
    "q4_0": GgufType(Q.Q4_0, LlamaFileType.MOSTLY_Q4_0, Q.Q8_0),
    "q4_1": GgufType(Q.Q4_1, LlamaFileType.MOSTLY_Q4_1, Q.Q8_0),
}


Keys = list[tuple[Callable[..., None], Any]]  # (GGUFWriter method, value): metadata one architecture adds


def _window(config: PretrainedConfig) -> int | None:
    """The sliding window some layers attend within, or None where every layer sees the whole context."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or ["sliding_attention"]  # none listed (Mistral): every layer
    if window is None or window >= config.max_position_embeddings or "sliding_attention" not in layer_types:
        return None
    return window


def _no_window(config: PretrainedConfig) -> Keys:
    """Llama, Mistral, Qwen 2 and 3: llama.cpp's converter writes no window for them and llama.cpp attends to the
    whole context, so a model trained with a window (Mistral 7B v0.1) would attend farther than it learned to."""
    if (window := _window(config)) is not None:
        raise TrainerError(
            f"GGUF export: {config.model_type} attends within a sliding window of {window} tokens (sliding_window, "
            f"context {config.max_position_embeddings}), which llama.cpp does not apply to this architecture; use "
            "export.formats=[safetensors]"
        )
    return []


def _phi3(config: PretrainedConfig) -> Keys:
    # llama.cpp's converter writes both; llama.cpp reads the window but runs Phi-3 without it for now (its loader's
    # "Phi SWA is currently disabled"), so text past the window attends farther than the model learned to.
    return [
        (gguf.GGUFWriter.add_rope_scaling_orig_ctx_len, config.original_max_position_embeddings),
        (gguf.GGUFWriter.add_sliding_window, config.sliding_window or 0),
    ]


def gemma3_query_scalar(hidden: int, heads: int, head_dim: int, layers: int) -> int:
    """What llama.cpp scales Gemma 3's queries by (1/sqrt of it): the head size, but hidden / heads for the 27B,
    which it knows by its 62 layers; Gemma 3's config calls it query_pre_attn_scalar, the file has no key for it."""
    return hidden // heads if layers == 62 else head_dim


GEMMA3_PATTERN = 6  # llama.cpp's Gemma 3: every sixth layer attends globally, the others within the window


def _gemma3(config: PretrainedConfig) -> Keys:
    """The window is the one Gemma 3 setting in the file; llama.cpp fixes the rest (its loader's Gemma 3 case), so a
    config that differs from what it fixes is refused by name rather than run differently."""
    layers, settings = config.num_hidden_layers, config.to_dict()
    scalar = gemma3_query_scalar(config.hidden_size, config.num_attention_heads, config.head_dim, layers)
    pattern = ["full_attention" if (i + 1) % GEMMA3_PATTERN == 0 else "sliding_attention" for i in range(layers)]
    fixed = [
        ("query_pre_attn_scalar", scalar),
        ("layer_types", pattern),
        ("rope_parameters.sliding_attention.rope_theta", 10000.0),  # the local layers' rope base
        ("hidden_activation", "gelu_pytorch_tanh"),
        ("attn_logit_softcapping", None),  # the converter asserts it away; the graph has none
        ("final_logit_softcapping", None),  # llama.cpp's sliding-window graph does not apply it
        ("use_bidirectional_attention", False),  # EmbeddingGemma: another architecture
    ]
    for name, expected in fixed:
        value = dotted.lookup(settings, name)
        if value != expected:
            raise TrainerError(
                f"GGUF export: gemma3_text's {name} is {value!r}; llama.cpp's Gemma 3 assumes {expected!r} and no "
                "GGUF key says otherwise; use export.formats=[safetensors]"
            )
    return [(gguf.GGUFWriter.add_sliding_window, config.sliding_window)]


@dataclass(frozen=True)
class Family:
    arch: gguf.MODEL_ARCH
    # llama.cpp's Llama graph applies rope to interleaved pairs; Hugging Face's weights rotate halves, so the
    # query and key rows are permuted on the way in (llama.cpp's converter does the same; readers undo it).
    permute_qk: bool = False
    # Gemma's RMSNorm scales by 1 + weight, llama.cpp's by the weight: the converter adds 1 to every `*norm.weight`
    # (transformers' reader subtracts it again).
    norm_shift: float = 0.0
    # the architecture's own keys; raises, naming the setting, where the file cannot say what the model does
    keys: Callable[[PretrainedConfig], Keys] = _no_window


# transformers' model_type -> how llama.cpp's converter names and lays out the architecture. Others are refused by
# name. Mistral is llama.cpp's Llama (its converter registers MistralForCausalLM there).
FAMILIES = {
    "qwen2": Family(gguf.MODEL_ARCH.QWEN2),
    "qwen3": Family(gguf.MODEL_ARCH.QWEN3),
    "llama": Family(gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    "mistral": Family(gguf.MODEL_ARCH.LLAMA, permute_qk=True),
    "phi3": Family(gguf.MODEL_ARCH.PHI3, keys=_phi3),
    "gemma3_text": Family(gguf.MODEL_ARCH.GEMMA3, norm_shift=1.0, keys=_gemma3),
}


def gguf_path(folder: Path, gguf_type: str) -> Path:
    return folder / GGUF_FILE.format(type=gguf_type)


def _ropes(config: PretrainedConfig) -> dict[str, dict[str, Any]]:
    """Rope settings per attention type (Gemma 3 has one for its global and one for its sliding layers)."""
    rope = getattr(config, "rope_parameters", None) or {}
    return rope if "full_attention" in rope else {"full_attention": rope}


def family_of(config: PretrainedConfig) -> Family:
    """How `config`'s architecture is written; refuses, naming it, an architecture or setting the file cannot hold,
    before anything is written."""
    family = FAMILIES.get(config.model_type)
    if family is None:
        raise TrainerError(
            f"GGUF export: the architecture {config.model_type!r} ({', '.join(config.architectures or [])}) is not "
            f"one this exporter writes ({', '.join(sorted(FAMILIES))}); use export.formats=[safetensors]"
        )
    for rope in _ropes(config).values():
        if rope.get("rope_type", "default") != "default":
            raise TrainerError(f"GGUF export: rope scaling {rope['rope_type']!r} of {config.model_type} is not written")
    family.keys(config)
    return family


def _hyperparameters(
    writer: gguf.GGUFWriter, config: PretrainedConfig, family: Family, name: str, file_type: LlamaFileType
) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = _ropes(config)["full_attention"]
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    if getattr(config, "head_dim", None) is not None:  # as the converter: llama.cpp's default is hidden / heads
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(int(rope.get("partial_rotary_factor", 1.0) * head_dim))
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for add, value in family.keys(config):
        add(writer, value)


@dataclass(frozen=True)
class Planned:
    key: str  # in the safetensors
    shard: Path
    name: str  # in the GGUF
    shape: tuple[int, ...]
    qtype: Q
    permute_heads: int | None  # the head count to permute rows by (Llama's query/key), else None
    shift: float  # added to every value (Gemma's norms)

    @property
    def nbytes(self) -> int:
        return math.prod(gguf.quant_shape_to_byte_shape(self.shape, self.qtype))


def _plan(folder: Path, config: PretrainedConfig, family: Family, kind: GgufType) -> list[Planned]:
    names = gguf.get_tensor_name_map(family.arch, config.num_hidden_layers)
    heads = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}
    plan = []
    for shard in base_shards(folder):
        with safe_open(shard, framework="pt") as reader:
            shapes = {key: tuple(reader.get_slice(key).get_shape()) for key in reader.keys()}  # noqa: SIM118
        for key, shape in shapes.items():
            if key == "lm_head.weight" and config.tie_word_embeddings:
                continue  # llama.cpp reads the embedding for a missing output head, and so do readers
            name = names.get_name(key, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise TrainerError(f"GGUF export: no llama.cpp name for the tensor {key} of {config.model_type}")
            if len(shape) == 1:
                qtype = Q.F32
            else:
                qtype = kind.head if name == "output.weight" else kind.weights
                if shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
                    qtype = Q.F16
            projection = key.rsplit(".", 2)[-2]
            permute = heads.get(projection) if family.permute_qk else None
            shift = family.norm_shift if key.endswith("norm.weight") else 0.0
            plan.append(Planned(key, shard, name, shape, qtype, permute, shift))
    return plan


def permute_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Hugging Face's rotate-half rope layout to llama.cpp's interleaved one, per head (llama.cpp's converter)."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def _encode(block: torch.Tensor, qtype: Q) -> np.ndarray:
    if qtype == Q.BF16:
        return block.to(torch.bfloat16).view(torch.int16).numpy()
    if qtype in (Q.F32, Q.F16):
        return block.to(torch.float32 if qtype == Q.F32 else torch.float16).numpy()
    return gguf.quants.quantize(block.float().numpy(), qtype)


def _blocks(entry: Planned, block_bytes: int) -> Iterator[torch.Tensor]:
    if entry.permute_heads or len(entry.shape) == 1:
        tensor = read_tensor(entry.shard, entry.key)
        yield permute_rows(tensor, entry.permute_heads) if entry.permute_heads else tensor
        return
    rows_per_block = max(1, block_bytes // (4 * math.prod(entry.shape[1:])))
    for start in range(0, entry.shape[0], rows_per_block):
        yield read_tensor(entry.shard, entry.key, slice(start, start + rows_per_block))


def write_gguf(folder: Path, gguf_type: str, name: str, block_bytes: int = BLOCK_BYTES) -> Path:
    """Write `folder`'s merged model (safetensors, config, tokenizer) as one GGUF file of `gguf_type` beside it."""
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    family = family_of(config)
    kind = GGUF_TYPES[gguf_type]
    plan = _plan(folder, config, family, kind)
    path = gguf_path(folder, gguf_type)
    partial = path.with_name(f".{path.name}.partial")
    writer = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[family.arch])
    _hyperparameters(writer, config, family, name, kind.file_type)
    add_tokenizer(writer, folder, config.vocab_size)
    for entry in plan:
        writer.add_tensor_info(entry.name, entry.shape, np.dtype(np.float32), entry.nbytes, raw_dtype=entry.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    # GGUFWriter.write_tensor_data takes whole tensors; the same layout (data aligned, each tensor padded to the
    # alignment) is written here block by block.
    out = writer.fout[0]
    writer.write_padding(out, out.tell())
    for entry in plan:
        written = 0
        for block in _blocks(entry, block_bytes):
            encoded = _encode(block.float() + entry.shift if entry.shift else block, entry.qtype)
            encoded.tofile(out)
            written += encoded.nbytes
        if written != entry.nbytes:
            raise TrainerError(f"internal: {entry.name} wrote {written} bytes, planned {entry.nbytes}")
        writer.write_padding(out, written)
    writer.close()
    partial.rename(path)
    return path
