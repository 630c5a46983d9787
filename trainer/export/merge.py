"""Streaming LoRA merge: base safetensors shards in, merged shards out, one tensor in memory at a time.

For each base tensor a LoRA layer targets, `W' = W + scaling · B·A` in fp32 (scaling = alpha/r, or alpha/√r with
rsLoRA); biases the adapter trained (`bias="all"`/`"lora_only"`) replace the base ones. Output shards are
flushed at `max_shard_bytes`, so peak memory is about one output shard plus the adapter, whatever the model size.

After QLoRA the base can be the original weights or their NF4 round-trip: every Linear weight that bitsandbytes
quantized during training (all but the output head), quantized and dequantized exactly as training did. The
round-trip is the function that was trained and evaluated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from trainer.checkpoints.folder import ADAPTER_CONFIG
from trainer.config import QuantizationSettings
from trainer.errors import TrainerError
from trainer.failpoints import maybe_pause

ADAPTER_PREFIX = "base_model.model."
ADAPTER_WEIGHTS = "adapter_model.safetensors"
INDEX = "model.safetensors.index.json"
BNB_BLOCKSIZE = 64  # bitsandbytes' default for 4-bit weights, the one training used


@dataclass
class Adapter:
    """A LoRA checkpoint's layout; tensors are read from `weights` when used, so memory holds one at a time."""

    weights: Path
    scaling: float
    lora: dict[str, tuple[str, str]] = field(default_factory=dict)  # base weight key -> (A key, B key)
    replacements: dict[str, str] = field(default_factory=dict)  # base key -> adapter key of a trained bias


def read_adapter_layout(checkpoint: Path) -> Adapter:
    """Read a PEFT LoRA checkpoint; refuse what this merge does not implement rather than merge it wrong."""
    settings = json.loads((checkpoint / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    unsupported = [
        name
        for name in ("use_dora", "fan_in_fan_out", "modules_to_save", "rank_pattern", "alpha_pattern", "lora_bias")
        if settings.get(name)
    ]
    if settings.get("peft_type", "LORA") != "LORA" or unsupported:
        raise TrainerError(f"{checkpoint}: the streaming merge does not support {unsupported or settings['peft_type']}")
    r, alpha = settings["r"], settings["lora_alpha"]
    weights = checkpoint / ADAPTER_WEIGHTS
    adapter = Adapter(weights=weights, scaling=alpha / math.sqrt(r) if settings.get("use_rslora") else alpha / r)
    halves: dict[str, dict[str, str]] = {}
    with safe_open(weights, framework="pt") as reader:
        keys = list(reader.keys())
    for key in keys:
        name = key.removeprefix(ADAPTER_PREFIX).replace(".base_layer.", ".")
        if not key.startswith(ADAPTER_PREFIX):
            raise TrainerError(f"{checkpoint}: unexpected adapter tensor {key}")
        for half in ("lora_A", "lora_B"):
            if name.endswith(f".{half}.weight"):
                halves.setdefault(name.removesuffix(f".{half}.weight") + ".weight", {})[half] = key
                break
        else:
            if not name.endswith(".bias"):
                raise TrainerError(f"{checkpoint}: adapter tensor {key} is of a kind the merge does not handle")
            adapter.replacements[name] = key
    for weight, pair in halves.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise TrainerError(f"{checkpoint}: {weight} has only {sorted(pair)}")
        adapter.lora[weight] = (pair["lora_A"], pair["lora_B"])
    return adapter


def base_shards(base_dir: Path) -> list[Path]:
    index = base_dir / INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return [base_dir / name for name in dict.fromkeys(weight_map.values())]
    single = base_dir / "model.safetensors"
    if not single.is_file():
        raise TrainerError(f"{base_dir}: no safetensors weights (model.safetensors or {INDEX}); .bin is refused")
    return [single]


def quantized_weight_keys(base_dir: Path) -> set[str]:
    """The Linear weights transformers' bitsandbytes integration quantizes for this architecture."""
    from torch import nn
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.quantizers.base import get_keys_to_not_convert
    from transformers.quantizers.quantizers_utils import should_convert_module

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base_dir))
    skip = get_keys_to_not_convert(skeleton)
    return {
        f"{name}.weight"
        for name, module in skeleton.named_modules()
        if type(module) is nn.Linear and should_convert_module(name, skip)
    }


def nf4_round_trip(
    quantization: QuantizationSettings, load_dtype: torch.dtype
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Quantize then dequantize a weight as bitsandbytes did when training loaded it in `load_dtype`."""
    import bitsandbytes.functional as bnb

    def round_trip(weight: torch.Tensor) -> torch.Tensor:
        packed, state = bnb.quantize_4bit(
            weight.to(load_dtype).contiguous(),
            blocksize=BNB_BLOCKSIZE,
            compress_statistics=quantization.double_quant,
            quant_type=quantization.quant_type,
        )
        return bnb.dequantize_4bit(packed, state).float()

    return round_trip


# safetensors' dtype names; the format is 8-byte header length, JSON header, then each tensor's raw bytes.
SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
DTYPE_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}


@dataclass(frozen=True)
class TensorEntry:
    key: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def write_shards(
    folder: Path,
    entries: list[TensorEntry],
    tensors: Iterator[tuple[str, Iterable[torch.Tensor]]],
    max_shard_bytes: int,
) -> list[str]:
    """Write `tensors` (in `entries` order, each as consecutive blocks) as `model-0000i-of-0000N.safetensors` shards.

    safetensors' own `save_file` needs a whole shard in memory (twice, while serialising); laying the header out
    from `entries` first lets each block go to disk as soon as it is computed.
    """
    groups: list[list[TensorEntry]] = [[]]
    group_bytes = 0
    for entry in entries:
        if groups[-1] and group_bytes + entry.nbytes > max_shard_bytes:
            groups.append([])
            group_bytes = 0
        groups[-1].append(entry)
        group_bytes += entry.nbytes
    names = [f"model-{n:05d}-of-{len(groups):05d}.safetensors" for n in range(1, len(groups) + 1)]
    for name, group in zip(names, groups, strict=True):
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for entry in group:
            header[entry.key] = {
                "dtype": DTYPE_NAMES[entry.dtype],
                "shape": list(entry.shape),
                "data_offsets": [offset, offset + entry.nbytes],
            }
            offset += entry.nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        partial = folder / f".{name}.partial"
        with partial.open("wb") as out:
            out.write(len(encoded).to_bytes(8, "little") + encoded)
            maybe_pause("shard")
            for entry in group:
                key, blocks = next(tensors)
                written = 0
                for block in blocks:
                    if block.dtype != entry.dtype:
                        raise TrainerError(f"internal: {key} block is {block.dtype}, planned {entry.dtype}")
                    written += out.write(block.contiguous().reshape(-1).view(torch.uint8).numpy().data)
                if key != entry.key or written != entry.nbytes:
                    raise TrainerError(f"internal: {key} ({written} bytes) does not fill its planned slot {entry}")
        partial.rename(folder / name)
    weight_map = {entry.key: name for name, group in zip(names, groups, strict=True) for entry in group}
    index = {"metadata": {"total_size": sum(e.nbytes for e in entries)}, "weight_map": weight_map}
    (folder / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return names


BLOCK_BYTES = 64 * 2**20  # fp32 bytes of rows merged and written at a time: bounds memory for any tensor size


def read_tensor(path: Path, key: str, rows: slice | None = None) -> torch.Tensor:
    # Opened per read: a reader kept open leaves every page it touched mapped, and counted, in the process.
    with safe_open(path, framework="pt") as reader:
        return reader.get_tensor(key) if rows is None else reader.get_slice(key)[rows].clone()


def _merged_blocks(
    shard: Path, entry: TensorEntry, adapter: Adapter, round_trip, quantized: set[str], block_bytes: int
):
    """The merged tensor `entry.key` as row blocks in the output dtype.

    LoRA is exact row by row (W[rows] + s·B[rows]·A). The NF4 round-trip needs the whole tensor: double
    quantization's statistics span it.
    """
    if entry.key in adapter.replacements:
        yield read_tensor(adapter.weights, adapter.replacements[entry.key]).to(entry.dtype)
        return
    lora = [read_tensor(adapter.weights, key).float() for key in adapter.lora.get(entry.key, ())]
    if entry.key in quantized or len(entry.shape) < 2:
        tensor = read_tensor(shard, entry.key)
        tensor = round_trip(tensor) if entry.key in quantized else tensor
        yield (tensor.float() + adapter.scaling * (lora[1] @ lora[0]) if lora else tensor).to(entry.dtype)
        return
    rows_per_block = max(1, block_bytes // (4 * math.prod(entry.shape[1:])))
    for start in range(0, entry.shape[0], rows_per_block):
        rows = slice(start, start + rows_per_block)
        block = read_tensor(shard, entry.key, rows)
        if lora:
            block = block.float() + adapter.scaling * (lora[1][rows] @ lora[0])
        yield block.to(entry.dtype)


def stream_merge(
    base_dir: Path,
    adapter: Adapter,
    out_dir: Path,
    dtype: torch.dtype,
    max_shard_bytes: int,
    round_trip: Callable[[torch.Tensor], torch.Tensor] | None = None,
    block_bytes: int = BLOCK_BYTES,
    quantized: set[str] | None = None,
) -> list[str]:
    """Write the merged weights of `base_dir` + `adapter` to `out_dir` as safetensors shards; return their names.

    `round_trip` applies to the `quantized` weight keys (default: those bitsandbytes quantizes for this model).
    """
    if quantized is None:
        quantized = quantized_weight_keys(base_dir) if round_trip else set()
    sources: list[tuple[Path, TensorEntry]] = []
    for shard in base_shards(base_dir):
        with safe_open(shard, framework="pt") as reader:
            for key in reader.keys():  # noqa: SIM118 - safe_open is not a dict
                view = reader.get_slice(key)
                stored = SAFETENSORS_DTYPES[view.get_dtype()]
                out_dtype = dtype if stored.is_floating_point else stored
                sources.append((shard, TensorEntry(key, out_dtype, tuple(view.get_shape()))))
    missing = (set(adapter.lora) | set(adapter.replacements)) - {entry.key for _, entry in sources}
    if missing:
        raise TrainerError(f"adapter tensors with no base weight to merge into: {sorted(missing)[:5]}")

    blocks = (
        (entry.key, _merged_blocks(shard, entry, adapter, round_trip, quantized, block_bytes))
        for shard, entry in sources
    )
    return write_shards(out_dir, [entry for _, entry in sources], blocks, max_shard_bytes)
