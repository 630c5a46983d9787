"""Loading the base model and tokenizer, and the LoRA/QLoRA settings: the one place both train and export use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, PreTrainedModel

from trainer.chat_template import apply_template_choice
from trainer.config import ModelConfig
from trainer.errors import TrainerError, first_line
from trainer.gguf_model import convert_gguf
from trainer.precision import DTYPES
from trainer.speedups import attention_implementation
from trainer.tiny_model import build_tiny_model


def base_model_path(config: ModelConfig) -> str:
    """A local folder (building the tiny model, or converting a GGUF file, if the config asks for it) or a Hub id."""
    if config.tiny is not None:
        return str(build_tiny_model(config.tiny, config.cache_dir))
    if config.from_gguf:
        return str(convert_gguf(config.name_or_path, config.cache_dir))
    return config.name_or_path


def _load_error(what: str, source: str, exc: Exception) -> TrainerError:
    return TrainerError(f"cannot load {what} from {source!r}: {first_line(exc)}")


def load_tokenizer(config: ModelConfig, source: str | Path | None = None):
    """The base model's tokenizer with the template `model.chat_template` names; a `source` folder (a checkpoint, an
    exported model) carries the template it was trained with."""
    from_base = source is None
    source = str(source or base_model_path(config))
    try:
        revision = config.revision if source == config.name_or_path else None
        tokenizer = AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error("tokenizer", source, exc) from None
    if from_base:
        apply_template_choice(tokenizer, config.chat_template)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(config: ModelConfig) -> BitsAndBytesConfig | None:
    q = config.quantization
    if q is None:
        return None
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=q.quant_type,
        bnb_4bit_use_double_quant=q.double_quant,
        bnb_4bit_compute_dtype=DTYPES[q.compute_dtype],
        bnb_4bit_quant_storage=DTYPES[q.compute_dtype],
    )


def _refuse_pickles(folder: Path, config: ModelConfig) -> None:
    """A local folder with pickled weights and no safetensors is refused unless the config allows pickles."""
    pickled = sorted(p.name for p in folder.glob("*.bin") if "model" in p.name)
    if pickled and not any(folder.glob("*.safetensors")) and not config.allow_pickle_weights:
        raise TrainerError(
            f"{folder}: only pickled weights ({', '.join(pickled)}), no safetensors; refused. Convert them, or set "
            "model.allow_pickle_weights=true to load them with torch.load(weights_only=True)"
        )


def load_kwargs(
    config: ModelConfig, source: str, dtype: torch.dtype, quantized: bool, cuda_device: int | None
) -> dict[str, Any]:
    """`from_pretrained`'s arguments. On a CUDA machine every load lands on the process's GPU (`cuda_device`): a
    plain-LoRA base or an exported folder too, not only a 4-bit one."""
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "attn_implementation": attention_implementation(config, strict=False),
        "trust_remote_code": config.trust_remote_code,
        "use_safetensors": None if config.allow_pickle_weights else True,  # None: safetensors first, then .bin
        "device_map": {"": cuda_device} if cuda_device is not None else None,
    }
    if source == config.name_or_path and config.revision:
        kwargs["revision"] = config.revision
    if quantized and config.quantization is not None:
        kwargs["quantization_config"] = quantization_config(config)
    return kwargs


def load_base_model(config: ModelConfig, dtype: torch.dtype, quantized: bool) -> PreTrainedModel:
    """The base model in `dtype`, 4-bit quantized when `quantized` and the config has a quantization section."""
    source = base_model_path(config)
    if Path(source).is_dir():
        _refuse_pickles(Path(source), config)
    cuda_device = torch.cuda.current_device() if torch.cuda.is_available() else None
    kwargs = load_kwargs(config, source, dtype, quantized, cuda_device)
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise _load_error("model", source, exc) from None
    if "quantization_config" in kwargs and cuda_device is None:
        _keep_cpu_4bit_layout(model)
    return model


def load_peft_model(base: PreTrainedModel, checkpoint: Path, config: ModelConfig) -> PeftModel:
    """`base` with the LoRA adapter of `checkpoint` applied (not merged), in eval mode."""
    _refuse_pickles(checkpoint, config)
    return PeftModel.from_pretrained(base, str(checkpoint)).eval()


def _keep_cpu_4bit_layout(model: PreTrainedModel) -> None:
    """Stop bitsandbytes repacking 4-bit weights for its AVX512-BF16 CPU kernel on the first no-grad forward.

    After such a forward (an evaluation) training either fails on an in-place op or computes with another
    kernel than a freshly started process, so a resumed run would drift from an uninterrupted one.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def lora_config(config: ModelConfig) -> LoraConfig:
    lora = config.lora
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        use_rslora=lora.use_rslora,
        bias=lora.bias,
        task_type="CAUSAL_LM",
    )
