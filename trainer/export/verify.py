"""Built-in export check: the written folder's logits against PEFT's base+adapter on fixed prompts, streamed.

Neither model is ever whole in memory. Each is a skeleton on the meta device in which every module that holds
weights gets an accelerate `AlignDevicesHook` (offload): just before the module runs, its tensors are read from
safetensors (the exported folder's shards; for the reference, the base's, NF4 round-tripped where the merge used that
base, plus the adapter's tensors, which PEFT applies unmerged) and put on the execution device in fp32; just
after, they go back to meta. Peak memory is the largest single tensor in fp32 (the embedding or the output head) plus
activations, whatever the model size. The execution device is the GPU where there is one, else the CPU; the three
prompts run as one right-padded batch, so each model reads each weight once.

The measure is max |Δlogit| / max |logit| over the prompts' own tokens; the bound per export dtype is its rounding of
the weights (measured on the tiny model: fp32 ≈ 1e-6, bf16 ≈ 1e-2), with headroom, and far below what a wrong merge
(a missed layer, a wrong scaling) produces.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from accelerate import init_empty_weights
from accelerate.hooks import attach_align_device_hook
from peft import PeftModel
from safetensors import safe_open
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PretrainedConfig

from trainer.errors import TrainerError
from trainer.export.merge import ADAPTER_PREFIX, ADAPTER_WEIGHTS, base_shards, read_tensor

TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2, "bf16": 6e-2}
PROMPTS = [
    [{"role": "user", "content": "How do I register a GET route?"}],
    [{"role": "system", "content": "Answer with Go code."}, {"role": "user", "content": "Show a middleware."}],
    [{"role": "user", "content": "What does the package do?"}],
]


def execution_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class StreamedWeights(Mapping[str, torch.Tensor]):
    """Parameter name → tensor, read from its safetensors file each time it is asked for; `round_trip` applies to
    the `quantized` keys."""

    def __init__(
        self,
        locations: dict[str, tuple[Path, str]],
        round_trip: Callable[[torch.Tensor], torch.Tensor] | None = None,
        quantized: set[str] | frozenset[str] = frozenset(),
    ):
        self.locations, self.round_trip, self.quantized = locations, round_trip, quantized

    def __getitem__(self, name: str) -> torch.Tensor:
        path, key = self.locations[name]
        tensor = read_tensor(path, key)
        return self.round_trip(tensor) if key in self.quantized else tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self.locations)

    def __len__(self) -> int:
        return len(self.locations)


def skeleton(config: PretrainedConfig) -> nn.Module:
    """The architecture of `config` with every parameter on the meta device, in fp32."""
    with init_empty_weights():
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def parameter_sources(model: nn.Module, stored: set[str] | dict[str, object]) -> dict[str, str]:
    """Each parameter of `model` -> the stored tensor it is read from.

    A parameter is looked up as the adapter file names it (PEFT saves without the adapter's name), then as the base
    names it (no PEFT prefix, no `base_layer`), then as the tensor it is tied to: so an adapter's trained bias
    takes the place of the base's, as in PEFT.
    """
    tied = getattr(model, "all_tied_weights_keys", {})  # a PeftModel passes the lookup on to the model it wraps
    adapter_name = model.active_adapter if isinstance(model, PeftModel) else None
    sources = {}
    for name, _ in model.named_parameters(remove_duplicate=False):
        base_key = name.removeprefix(ADAPTER_PREFIX).replace(".base_layer.", ".")
        adapter_key = name.replace(f".{adapter_name}.", ".") if adapter_name else name
        key = next((k for k in (adapter_key, base_key, tied.get(base_key)) if k in stored), None)
        if key is None:
            raise TrainerError(f"no stored tensor for the parameter {name}")
        sources[name] = key
    return sources


def attach_weights(model: nn.Module, weights: Mapping[str, torch.Tensor], device: torch.device) -> nn.Module:
    """Hook every module of `model` to read its parameters from `weights` just before it runs (offload)."""
    attach_align_device_hook(model, execution_device=device, offload=True, weights_map=weights)
    return model.eval()


def _stream(model: nn.Module, files: list[Path], device: torch.device, round_trip=None, quantized=frozenset()):
    """`model` with its parameters read from the safetensors `files` when each module runs."""
    stored: dict[str, Path] = {}
    for path in files:
        with safe_open(path, framework="pt") as reader:
            stored |= dict.fromkeys(reader.keys(), path)
    locations = {name: (stored[key], key) for name, key in parameter_sources(model, stored).items()}
    return attach_weights(model, StreamedWeights(locations, round_trip, quantized), device)


def merged_model(folder: Path, device: torch.device | None = None) -> nn.Module:
    """The exported folder's model, its weights streamed from its shards module by module."""
    return _stream(skeleton(AutoConfig.from_pretrained(folder)), base_shards(folder), device or execution_device())


def reference_model(
    base_dir: Path,
    checkpoint: Path,
    round_trip: Callable[[torch.Tensor], torch.Tensor] | None,
    quantized_keys: set[str],
    device: torch.device | None = None,
) -> nn.Module:
    """PEFT's base+adapter, unmerged: the base streamed from `base_dir` (the `quantized_keys` NF4 round-tripped when
    `round_trip` is given, as the merge did), and the adapter's tensors from the checkpoint."""
    # low_cpu_mem_usage: PEFT adds its LoRA layers on the meta device too; their tensors stream like the base's.
    base = skeleton(AutoConfig.from_pretrained(base_dir))
    peft_model = PeftModel.from_pretrained(base, str(checkpoint), low_cpu_mem_usage=True)
    files = [*base_shards(base_dir), checkpoint / ADAPTER_WEIGHTS]
    return _stream(peft_model, files, device or execution_device(), round_trip, quantized_keys)


def prompt_batch(folder: Path) -> dict[str, torch.Tensor]:
    """The fixed prompts, chat-templated by `folder`'s tokenizer, as one right-padded batch."""
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, padding_side="right")
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return tokenizer.apply_chat_template(
        PROMPTS, add_generation_prompt=True, padding=True, return_tensors="pt", return_dict=True
    )


def prompt_logits(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Each prompt's logits at its own tokens (right padding: no prompt token sees a pad), computed on `device`."""
    with torch.no_grad():
        logits = model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False).logits.float().cpu()
    return [row[mask.bool()] for row, mask in zip(logits, batch["attention_mask"], strict=True)]


def relative_difference(got: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    """max |Δlogit| / max |logit| of the expected logits."""
    scale = max(float(e.abs().max()) for e in expected)
    return max(float((g - e).abs().max()) for g, e in zip(got, expected, strict=True)) / scale


def verify_export(folder: Path, reference_factory: Callable[[], nn.Module], dtype: str) -> float:
    """Relative logit difference between the exported folder and the reference; raises past the dtype's bound."""
    device = execution_device()  # the reference factory's default too
    batch = prompt_batch(folder)
    expected = prompt_logits(reference_factory(), batch, device)  # each model is freed before the next is built
    difference = relative_difference(prompt_logits(merged_model(folder, device), batch, device), expected)
    if difference > TOLERANCE[dtype]:
        raise TrainerError(
            f"export verification failed: merged logits differ from base+adapter by {difference:.2e} of the "
            f"largest logit (bound for {dtype}: {TOLERANCE[dtype]:.0e}); the folder was not published"
        )
    return difference
