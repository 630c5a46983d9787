"""The train stage: TRL's SFTTrainer with a PEFT LoRA adapter on a (optionally 4-bit) base model.

Data arrives pre-tokenized from `tokenize.py`, so the loss mask is ours and testable; TRL then packs rows
best-fit-decreasing into `max_length` blocks with per-conversation `position_ids`, which keeps packed conversations
from attending to each other (varlen kernels with flash-attention; SDPA without a mask or cache here).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import re
import shutil
import signal
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from trl import SFTConfig, SFTTrainer

from trainer.api_index import load_symbols
from trainer.checkpoints.folder import (
    MANIFEST,
    TRAINER_STATE,
    SaveFailed,
    abandon,
    checkpoint_dirs,
    checkpoint_name,
    problem,
)
from trainer.checkpoints.store import CheckpointStore, checkpoint_store
from trainer.config import Config, TrainingConfig
from trainer.dataset import load_processed
from trainer.errors import Interrupted, Preempted, TrainerError, first_line
from trainer.evaluation.generation import Decoding
from trainer.metrics_log import METRICS_FILE
from trainer.model import base_model_path, load_base_model, load_tokenizer, lora_config
from trainer.precision import DTYPES, resolve_precision
from trainer.progress import on_terminal
from trainer.speedups import attention_implementation, use_liger
from trainer.tokenize import IGNORE_INDEX, tokenize_split, training_template
from trainer.training.callbacks import GenerationEval, JsonlMetrics, PreemptionGuard, TimedSaves, restore_metrics
from trainer.training.log_lines import show_progress
from trainer.training.notice import notice_path
from trainer.training.resume import ConfigStepIntervals, check_resume, same_on_every_process
from trainer.training.run_lock import run_lock
from trainer.training.sampler import LengthBucketSampler

RUN_SUMMARY = "train_run.json"  # in training.logging_dir: the run's totals and the tokenized data report


def resolve_resume(training: TrainingConfig, store: CheckpointStore) -> Path | None:
    """`auto`: the newest complete checkpoint, local or remote; `never`: start fresh; else that checkpoint."""
    if training.resume == "auto":
        return store.latest_complete()
    if training.resume == "never":
        if store.remote is not None and store.remote.folders():
            raise TrainerError(
                f"training.resume=never, but {training.checkpoint_uri} holds checkpoints of an earlier run; "
                "use another training.checkpoint_uri or delete them"
            )
        for old in checkpoint_dirs(training.output_dir):
            print(f"training.resume=never: removing earlier checkpoint {old}")
            shutil.rmtree(old)
        return None
    path = Path(training.resume)
    if not (path / TRAINER_STATE).is_file():
        raise TrainerError(f"training.resume: {path} is not a checkpoint folder (no {TRAINER_STATE})")
    reason = problem(path) if (path / MANIFEST).is_file() else None
    if reason:
        raise TrainerError(f"training.resume: {path} is torn: {reason}")
    return path


def _stop(guard: PreemptionGuard, step: int, store: CheckpointStore, t: TrainingConfig) -> Preempted:
    """What to raise after a stop on a signal or notice: Ctrl-C is the user's (exit 130), anything else a
    preemption (75)."""
    saved = f"checkpoint {t.output_dir / checkpoint_name(step)} saved"
    if store.remote is not None:
        uploaded = store.wait(timeout=t.sigterm_upload_timeout_s)
        saved += " and uploaded" if uploaded else f" (upload not finished after {t.sigterm_upload_timeout_s:g} s)"
    if guard.received == signal.SIGINT:
        return Interrupted(f"stopped by Ctrl-C at step {step}; {saved}; run the same command to resume", step)
    if guard.received:
        why = guard.received.name
    elif guard.noticed:
        why = f"the preemption notice ({guard.notice})"
    else:
        why = "a signal or notice to another process of the run"
    return Preempted(f"stopped by {why} at step {step}; {saved}; restart to resume", step)


def finished(checkpoint: Path, training: TrainingConfig) -> bool:
    """Whether `checkpoint` is where this run ends: its step has reached training.max_steps, or, for a run by
    epochs, the total the run computed (when the number of epochs is unchanged). Training on from there would
    take the model past what it was asked for, one more step at every restart."""
    state = json.loads((checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    if training.max_steps > 0:
        return state["global_step"] >= training.max_steps
    return state.get("num_train_epochs") == training.num_train_epochs and state["global_step"] >= state["max_steps"]


class SupervisedSFTTrainer(SFTTrainer):
    """SFTTrainer that refuses a batch with no supervised token instead of silently training on a zero loss."""

    def _get_train_sampler(self, train_dataset=None):
        # One order on every process: accelerate hands batch i to process i mod world_size, so the processes of a
        # multi-node step see the batches one process would see over as many accumulation steps.
        if self.args.train_sampling_strategy != "group_by_length":
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = [len(ids) for ids in dataset["input_ids"]]
        return LengthBucketSampler(lengths, self.args.train_batch_size, self.args.seed)

    def create_model_card(self, *args, **kwargs):
        """Nothing: TRL's card (at every save, in the run's folder) named no base model; seal_config writes ours."""

    def _save_checkpoint(self, model, trial):
        folder = Path(self.args.output_dir) / checkpoint_name(self.state.global_step)
        try:
            super()._save_checkpoint(model, trial)
        except Exception as exc:  # torch.save and safetensors wrap a full disk in their own exception types
            raise SaveFailed(folder, exc) from exc

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not bool((inputs["labels"][..., 1:] != IGNORE_INDEX).any()):
            raise TrainerError(f"step {self.state.global_step}: a batch has no supervised (assistant) token")
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def wandb_env(training: TrainingConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """The W&B variables to set for this run, or {} when W&B is off.

    The run id comes from SKYPILOT_TASK_ID (stable across SkyPilot's spot recoveries) or the run name, so a
    restarted job continues the same W&B run instead of starting a new one.
    """
    if training.wandb is False or (training.wandb == "auto" and not environ.get("WANDB_API_KEY")):
        return {}
    run_id = environ.get("SKYPILOT_TASK_ID", training.run_name)
    return {
        "WANDB_PROJECT": environ.get("WANDB_PROJECT", training.wandb_project),
        "WANDB_RUN_ID": environ.get("WANDB_RUN_ID", re.sub(r"[^A-Za-z0-9._-]", "-", run_id)),
        "WANDB_RESUME": environ.get("WANDB_RESUME", "allow"),
    }


def _report_to(training: TrainingConfig) -> list[str]:
    env = wandb_env(training, os.environ)
    if not env:
        return []
    if importlib.util.find_spec("wandb") is None:
        raise TrainerError(
            "W&B reporting is on (training.wandb is true, or auto with WANDB_API_KEY set) but wandb is not "
            "installed: pip install 'trainer[wandb]', or --set training.wandb=false"
        )
    os.environ.update(env)
    return ["wandb"]


def sft_config(config: Config, precision: str, has_eval: bool) -> SFTConfig:
    t = config.training
    packing = bool(t.packing)  # resolved(): no `auto` here
    return SFTConfig(
        output_dir=str(t.output_dir),
        run_name=t.run_name,
        use_cpu=not torch.cuda.is_available(),  # accelerate forms a gloo process group on CPU only when told
        max_steps=t.max_steps,
        num_train_epochs=t.num_train_epochs,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=None,  # retention is CheckpointStore's: it must not delete what is still uploading
        logging_steps=t.logging_steps,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=t.eval_steps or t.save_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_steps,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        max_length=t.max_length,
        packing=packing,
        packing_strategy="bfd",
        # Unpacked runs batch with LengthBucketSampler (SupervisedSFTTrainer), on any number of processes.
        train_sampling_strategy="group_by_length" if t.group_by_length and not packing else "random",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=t.gradient_checkpointing,
        use_liger_kernel=use_liger(t),
        torch_compile=t.torch_compile,
        optim=t.optim,
        seed=t.seed,
        report_to=_report_to(t),
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=not on_terminal(),  # a bar with ETA on a terminal; in a log, the JSON lines alone
    )


@dataclass
class TrainResult:
    final_checkpoint: Path
    metrics: dict[str, Any]


def build_trainer(config: Config) -> tuple[SupervisedSFTTrainer, dict[str, Any]]:
    """Everything up to the first step: data, tokenizer, model, adapter, SFTTrainer."""
    config = resolved(config)  # idempotent; refuses a forced kernel that cannot run before anything is loaded
    t = config.training
    splits = load_processed(config.data.output_dir)
    if len(splits["train"]) == 0:
        raise TrainerError(f"{config.data.output_dir}: the train split is empty")
    tokenizer = load_tokenizer(config.model)
    template = training_template(tokenizer)
    train_set, train_report = tokenize_split(splits["train"], tokenizer, template, t.max_length, t.overlong)
    eval_set, eval_report = None, None
    if len(splits["validation"]):
        eval_set, eval_report = tokenize_split(
            splits["validation"], tokenizer, template, t.max_length, t.overlong, "validation"
        )
    full_list = t.logging_dir / RUN_SUMMARY
    print(f"train: {train_report.summary(str(full_list))}")
    if eval_report:
        print(f"validation: {eval_report.summary(str(full_list))}")
    precision = resolve_precision(t.precision)
    args = sft_config(config, precision, has_eval=eval_set is not None)  # before the model: refuses kernels early
    model = load_base_model(config.model, DTYPES[precision], quantized=True)
    model.config.use_cache = False
    trainer = SupervisedSFTTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        peft_config=lora_config(config.model),
        callbacks=[JsonlMetrics(t.logging_dir / METRICS_FILE)],
    )
    show_progress(trainer)
    if t.eval_generation_samples and len(splits["validation"]):
        rows = list(splits["validation"])[: t.eval_generation_samples]
        symbols = load_symbols(config.data.output_dir)  # read once, not at every evaluation
        ev = config.evaluation
        log = t.logging_dir / METRICS_FILE
        trainer.add_callback(GenerationEval(rows, tokenizer, symbols, Decoding.of(ev), ev.batch_size, log))
    # TRL stores QLoRA adapters in bf16, but resuming reloads them in fp32 (PEFT's default), so a resumed run would
    # continue from other weights than an uninterrupted one. fp32 master weights in both, computed in the run's
    # precision under autocast, keep resume exact (and are the sounder mixed-precision choice anyway).
    for parameter in trainer.model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    data_report = {
        "precision": precision,
        "train": train_report.__dict__,
        "validation": eval_report.__dict__ if eval_report else None,
    }
    return trainer, data_report


def resolved(config: Config) -> Config:
    """Every `auto` of the model and training sections replaced by what it means on this machine: the config each
    checkpoint carries, so evaluation and export reload exactly the function that was trained."""
    t, m = config.training, config.model
    attention = attention_implementation(m)
    update = {
        "precision": resolve_precision(t.precision),
        "packing": t.packing if t.packing != "auto" else attention == "flash_attention_2",
        "liger_kernel": use_liger(t),
        "wandb": bool(wandb_env(t, os.environ)),
    }
    model = m.model_copy(update={"attn_implementation": attention})
    return config.model_copy(update={"model": model, "training": t.model_copy(update=update)})


def refuse_cpu_training(config: Config, cuda: bool) -> None:
    """A real model on a machine where torch sees no GPU is refused unless asked for: the usual cause is a driver
    older than the CUDA build of torch needs, and going on would quietly train 7B in fp32 on the CPU for days."""
    if cuda or config.model.tiny is not None or config.training.allow_cpu:
        return
    raise TrainerError(
        f"model.name_or_path={config.model.name_or_path}: torch {torch.__version__} sees no CUDA GPU (built for CUDA "
        f"{torch.version.cuda or 'none'}; a driver older than that build needs hides the GPU: see nvidia-smi). "
        "Training on the CPU would take days; --set training.allow_cpu=true to do it anyway"
    )


def train(config: Config, callbacks: tuple = ()) -> TrainResult:
    refuse_cpu_training(config, torch.cuda.is_available())
    config = resolved(config)
    t = config.training
    store = checkpoint_store(t)
    # The tiny debug model is built before joining the process group: once there is one, transformers writes
    # weights on global rank 0 only, and every node needs its own copy.
    base_model_path(config.model)
    # Under torchrun this joins the process group (a no-op in one process). The node's first process finds (and
    # fetches) the checkpoint to resume from before the others look, so they find it local instead of racing.
    processes = PartialState(cpu=not torch.cuda.is_available())
    # Rank 0 holds the output folder (the ranks of one run share it) from before anything is resumed or deleted.
    with run_lock(t.output_dir) if processes.is_main_process else nullcontext():
        return _train(config, store, processes, callbacks)


def _train(config: Config, store: CheckpointStore, processes: PartialState, callbacks: tuple) -> TrainResult:
    t = config.training
    with processes.local_main_process_first():
        resume = resolve_resume(t, store)
    same_on_every_process(resume)
    announcement = check_resume(resume, config) if resume else None
    metrics_log = t.logging_dir / METRICS_FILE
    if resume and finished(resume, t):
        print(f"train: {resume} is the end of this run; nothing to train (raise training.max_steps to go on)")
        if processes.is_main_process:
            store.finish(resume)  # a job restarted after its last save still mirrors it
        return TrainResult(final_checkpoint=resume, metrics={})
    if announcement:
        print(announcement)
    print(f"train: metrics log (JSON lines) → {metrics_log}")
    if processes.is_local_main_process and resume:
        restore_metrics(resume, metrics_log)
    elif processes.is_local_main_process:
        metrics_log.unlink(missing_ok=True)
    trainer, data_report = build_trainer(config)
    guard = PreemptionGuard(store, metrics_log, config, notice_path())
    timed = (TimedSaves(t.save_every_minutes),) if t.save_every_minutes else ()
    for callback in (guard, ConfigStepIntervals(), *timed, *callbacks):
        trainer.add_callback(callback)
    guard.install()
    try:
        output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except SaveFailed as failed:
        raise TrainerError(abandon(failed)) from None
    except pickle.UnpicklingError as exc:  # torch.load(weights_only=True) met something other than tensors
        raise TrainerError(f"{resume}: refused to unpickle a checkpoint file: {first_line(exc)}") from None
    finally:
        guard.uninstall()
    step = trainer.state.global_step
    if guard.stopped:
        raise _stop(guard, step, store, t)
    # With a step save strategy transformers always saves at the last step too.
    final = t.output_dir / checkpoint_name(step)
    if not processes.is_main_process:
        return TrainResult(final_checkpoint=final, metrics=output.metrics)  # rank 0 saved, uploads and reports
    store.finish(final)
    run = {"resumed_from": str(resume) if resume else None, "global_step": step, **output.metrics, "data": data_report}
    run["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    trainable, total = trainer.model.get_nb_trainable_parameters()  # PEFT counts 4-bit weights unpacked
    run["base_parameters"], run["trainable_parameters"] = total - trainable, trainable
    t.logging_dir.mkdir(parents=True, exist_ok=True)
    (t.logging_dir / RUN_SUMMARY).write_text(json.dumps(run, indent=2) + "\n", encoding="utf-8")
    return TrainResult(final_checkpoint=final, metrics=output.metrics)
