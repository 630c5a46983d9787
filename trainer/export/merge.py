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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from trainer.config import QuantizationSettings
from trainer.errors import TrainerError

ADAPTER_PREFIX = "base_model.model."
INDEX = "model.safetensors.index.json"
BNB_BLOCKSIZE = 64  # bitsandbytes' default for 4-bit weights, the one training used


@dataclass
class Adapter:
    scaling: float
    lora: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)  # base weight key -> (A, B)
    replacements: dict[str, torch.Tensor] = field(default_factory=dict)  # base key -> trained tensor (biases)


def load_adapter(checkpoint: Path) -> Adapter:
    """Read a PEFT LoRA checkpoint; refuse what this merge does not implement rather than merge it wrong."""
    settings = json.loads((checkpoint / "adapter_config.json").read_text(encoding="utf-8"))
    unsupported = [
        name
        for name in ("use_dora", "fan_in_fan_out", "modules_to_save", "rank_pattern", "alpha_pattern", "lora_bias")
        if settings.get(name)
    ]
    if settings.get("peft_type", "LORA") != "LORA" or unsupported:
        raise TrainerError(f"{checkpoint}: the streaming merge does not support {unsupported or settings['peft_type']}")
    r, alpha = settings["r"], settings["lora_alpha"]
    adapter = Adapter(scaling=alpha / math.sqrt(r) if settings.get("use_rslora") else alpha / r)
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(checkpoint / "adapter_model.safetensors").items():
        name = key.removeprefix(ADAPTER_PREFIX).replace(".base_layer.", ".")
        if not key.startswith(ADAPTER_PREFIX):
            raise TrainerError(f"{checkpoint}: unexpected adapter tensor {key}")
        for half in ("lora_A", "lora_B"):
            if name.endswith(f".{half}.weight"):
                halves.setdefault(name.removesuffix(f".{half}.weight") + ".weight", {})[half] = tensor
                break
        else:
            if not name.endswith(".bias"):
                raise TrainerError(f"{checkpoint}: adapter tensor {key} is of a kind the merge does not handle")
            adapter.replacements[name] = tensor
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


class ShardWriter:
    """Collects tensors and writes `model-0000i-of-0000N.safetensors` shards of at most `max_bytes` plus the index."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder, self.max_bytes = folder, max_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.shards: list[list[str]] = []
        self.total_bytes = 0

    def add(self, key: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + size > self.max_bytes:
            self._flush()
        self.pending[key] = tensor.contiguous()
        self.pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        save_file(self.pending, self.folder / f".part-{len(self.shards)}.safetensors", metadata={"format": "pt"})
        self.shards.append(list(self.pending))
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> list[str]:
        if self.pending:
            self._flush()
        weight_map, names = {}, []
        for number, keys in enumerate(self.shards, start=1):
            name = f"model-{number:05d}-of-{len(self.shards):05d}.safetensors"
            (self.folder / f".part-{number - 1}.safetensors").rename(self.folder / name)
            weight_map.update(dict.fromkeys(keys, name))
            names.append(name)
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.folder / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        return names


def stream_merge(
    base_dir: Path,
    adapter: Adapter,
    out_dir: Path,
    dtype: torch.dtype,
    max_shard_bytes: int,
    round_trip: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[str]:
    """Write the merged weights of `base_dir` + `adapter` to `out_dir` as safetensors shards; return their names."""
    quantized = quantized_weight_keys(base_dir) if round_trip else set()
    writer = ShardWriter(out_dir, max_shard_bytes)
    used = set()
    for shard in base_shards(base_dir):
        with safe_open(shard, framework="pt") as reader:
            for key in reader.keys():  # noqa: SIM118 - safe_open is not a dict
                tensor = reader.get_tensor(key)
                if key in quantized:
                    tensor = round_trip(tensor)
                if key in adapter.lora:
                    lora_a, lora_b = adapter.lora[key]
                    tensor = tensor.float() + adapter.scaling * (lora_b.float() @ lora_a.float())
                    used.add(key)
                if key in adapter.replacements:
                    tensor = adapter.replacements[key]
                    used.add(key)
                writer.add(key, tensor.to(dtype))
                del tensor
    missing = (set(adapter.lora) | set(adapter.replacements)) - used
    if missing:
        raise TrainerError(f"adapter tensors with no base weight to merge into: {sorted(missing)[:5]}")
    return writer.close()
