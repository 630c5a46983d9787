"""Benchmark training throughput against the stock recipe: TRL's SFTTrainer with its defaults plus PEFT LoRA.

Same tiny model (plain LoRA, fp32, CPU), same tokens (the sample set plus conversations synthesised from gin,
tokenized and truncated once by our code), same batch size, accumulation, learning rate and epochs, each run in its
own process (peak RSS is that process's VmHWM):

- stock: `SFTTrainer(model, SFTConfig(defaults), peft_config=LoraConfig(same adapter))` on those tokens as
  `input_ids` — no packing, each batch padded to its longest conversation, loss on every token, and TRL's default
  gradient checkpointing; and `stock-assistant-loss`, the same with our labels (assistant tokens only) and our
  learning-rate schedule: the loss reference, where batching is all that differs from ours;
- ours: `trainer train`'s trainer as the debug config sets it (assistant-only loss; `training.packing: auto`, which
  on CPU/SDPA means batches of similar length padded to their longest; no gradient checkpointing); ours with
  gradient checkpointing on, like stock; and ours with packing forced on (BFD, padding-free, position ids reset per
  conversation), to show what packing costs without varlen attention kernels.

Supervised tokens are the assistant tokens (what the model is being taught); every run sees each once an epoch, so
supervised tokens/s = their total / training-loop time (train begin → end of the last optimizer step: data,
forward, backward, optimizer and callbacks; not the evaluation and save ours does once at the end, which stock
does not). Padding share = padded positions / all positions computed in training batches. Final loss: the
assistant-token loss on the validation split after the epoch.

Usage: python benchmarks/throughput.py [--report docs/benchmarks.md]
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

START = time.perf_counter()

from benchlib import append_section, report_path  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GIN = "/usr/share/gocode/src/github.com/gin-gonic/gin"
BATCH, ACCUMULATION, EPOCHS, LEARNING_RATE, TRAIN_ROWS, REPEATS = 4, 4, 2, 1e-2, 400, 5
KINDS = ("stock", "stock-assistant-loss", "ours", "ours-checkpointing", "ours-packed")
CALLBACK_PAIR = ("ours-no-callbacks", "ours-callbacks")
TARGET_RATIO, TARGET_PADDING = 1.8, 0.05


def config_for(work: Path, packing: str, *extra: str, seed: int = 42):
    from trainer.config_file import load_config

    return load_config(
        ROOT / "configs/training/debug.yaml",
        [
            f"data.output_dir={work / 'processed'}", f"data.cache_dir={work / 'cache'}",
            f"model.cache_dir={work / 'models'}", "model.quantization=null", "model.lora.dropout=0",
            f"training.output_dir={work / 'ckpt'}", f"training.logging_dir={work / 'logs'}", "training.max_steps=-1",
            f"training.num_train_epochs={EPOCHS}", f"training.per_device_train_batch_size={BATCH}",
            f"training.gradient_accumulation_steps={ACCUMULATION}", f"training.seed={seed}",
            "training.save_steps=100000", "training.logging_steps=1000", f"training.packing={packing}",
            f"training.learning_rate={LEARNING_RATE}", *extra,
        ],
    )  # fmt: skip


class Counter:
    """Wraps a data collator: positions computed and padded positions in every batch."""

    def __init__(self, collate):
        self.collate, self.positions, self.padded = collate, 0, 0

    def __call__(self, features):
        batch = self.collate(features)
        self.positions += batch["input_ids"].numel()
        if "attention_mask" in batch:
            self.padded += int((batch["attention_mask"] == 0).sum())
        return batch


class Clock(TrainerCallback):
    """When training began, when the first and the last optimizer steps ended, and the counts up to the last step.

    The training loop's time is begin → last step: every step's data, forward, backward, optimizer and callbacks,
    but not the evaluation and save `trainer train` does once after the last step (the stock recipe does neither).
    """

    def __init__(self, counter: Counter):
        self.counter = counter

    def on_train_begin(self, args, state, control, **kwargs):
        self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.last_step = time.perf_counter()
        self.positions, self.padded = self.counter.positions, self.counter.padded
        if state.global_step == 1:
            self.first_step = self.last_step


def child(kind: str, work: Path, out: Path, seed: int) -> None:
    import torch

    from trainer.checkpoints.store import checkpoint_store
    from trainer.dataset import load_processed
    from trainer.evaluation.evaluate import teacher_forced
    from trainer.metrics_log import METRICS_FILE
    from trainer.model import lora_config
    from trainer.training.callbacks import JsonlMetrics, PreemptionGuard
    from trainer.training.train import build_trainer

    torch.manual_seed(seed)
    checkpointing = f"training.gradient_checkpointing={kind == 'ours-checkpointing'}"
    config = config_for(work, "true" if kind == "ours-packed" else "auto", checkpointing, seed=seed)
    if kind.startswith("stock"):
        from datasets import Dataset
        from trl import SFTConfig, SFTTrainer

        from trainer.model import load_base_model, load_tokenizer
        from trainer.tokenize import tokenize_split, training_template

        # The very tokens ours trains on (its tokenizer and truncation), given as input_ids only: the stock collator
        # then pads to the longest and puts the loss on every token. Conversations as `messages` would not be the
        # same data: Arrow merges every tool call's argument keys across rows, and `Dataset.from_list` drops a
        # `tools` column the first row lacks.
        tokenizer = load_tokenizer(config.model)
        rows = load_processed(config.data.output_dir)["train"]
        template = training_template(tokenizer)
        tokens, _ = tokenize_split(rows, tokenizer, template, config.training.max_length, "truncate")
        columns = {"input_ids": tokens["input_ids"]}
        if kind == "stock-assistant-loss":  # the loss reference: stock batching, our objective
            columns["labels"] = tokens["labels"]
        dataset = Dataset.from_dict(columns)
        args = SFTConfig(
            output_dir=str(work / "stock"), num_train_epochs=EPOCHS, per_device_train_batch_size=BATCH,
            gradient_accumulation_steps=ACCUMULATION, learning_rate=LEARNING_RATE, report_to=[], save_strategy="no",
            bf16=False, use_cpu=True, seed=seed, logging_steps=1000,
            # The loss reference takes our schedule too, so that batching is all that differs from ours.
            **({"lr_scheduler_type": config.training.lr_scheduler_type} if kind == "stock-assistant-loss" else {}),
        )  # fmt: skip
        model = load_base_model(config.model, torch.float32, quantized=False)
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=lora_config(config.model))  # fmt: skip
    elif kind in CALLBACK_PAIR:
        # Same saves (transformers' own writing) and logging every step; only our callbacks differ: the metrics
        # log and sealing each checkpoint with a hashed manifest (no bucket: the preemption bench measures uploads).
        saves = ("training.save_steps=20", "training.logging_steps=1", f"training.output_dir={work / kind}")
        config = config_for(work, "auto", *saves, seed=seed)
        trainer, _ = build_trainer(config)
        tokenizer = trainer.processing_class
        if kind == "ours-no-callbacks":
            trainer.remove_callback(JsonlMetrics)
        else:
            metrics_log = config.training.logging_dir / METRICS_FILE
            trainer.add_callback(PreemptionGuard(checkpoint_store(config.training), metrics_log, config))
    else:
        trainer, _ = build_trainer(config)
        tokenizer = trainer.processing_class
    counter = Counter(trainer.data_collator)
    trainer.data_collator = counter
    clock = Clock(counter)
    trainer.add_callback(clock)
    metrics = trainer.train().metrics
    validation = list(load_processed(config.data.output_dir)["validation"])
    loss = teacher_forced(trainer.model.eval(), tokenizer, validation)["all"]["loss"]
    status = Path("/proc/self/status").read_text().splitlines()
    peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))
    result = {
        "seconds": clock.last_step - clock.begin, "train_runtime": metrics["train_runtime"],
        "steps": trainer.state.global_step, "positions": clock.positions, "padded": clock.padded,
        "validation_loss": loss, "peak_rss_gib": peak_kib / 2**20, "first_step_s": clock.first_step - START,
    }  # fmt: skip
    out.write_text(json.dumps(result))


def run_child(kind: str, work: Path, seed: int) -> dict:
    out = work / f"{kind}.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    subprocess.run([sys.executable, __file__, "--child", kind, str(work), str(out), str(seed)], check=True, env=env)
    return json.loads(out.read_text())


def prepare(work: Path) -> int:
    """The benchmark's data: sample set + gin, the first TRAIN_ROWS train rows; returns its assistant tokens."""
    from datasets import DatasetDict

    from trainer.data_config import GoSource
    from trainer.dataset import load_processed
    from trainer.model import load_tokenizer
    from trainer.synthesis.synthesize import synthesize
    from trainer.tokenize import tokenize_split, training_template

    config = config_for(work, packing="auto")
    config.data.sources = [GoSource(url=GIN, name="gin")]
    synthesize(config)
    splits = load_processed(config.data.output_dir)
    subset = DatasetDict({"train": splits["train"].select(range(TRAIN_ROWS)), "validation": splits["validation"]})
    subset.save_to_disk(str(work / "subset"))
    for name in ("train", "validation"):
        (config.data.output_dir / name).rename(work / f"full-{name}")
        (work / "subset" / name).rename(config.data.output_dir / name)
    tokenizer = load_tokenizer(config.model)
    _, report = tokenize_split(subset["train"], tokenizer, training_template(tokenizer), 1024, "truncate")
    return report.supervised_tokens


def main(report: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as scratch:
        work = Path(scratch)
        supervised = prepare(work)
        # Each repeat has its own seed (data order, adapter init), so the spread of a kind's losses is the noise.
        trials = [{kind: run_child(kind, work, 42 + r) for kind in KINDS + CALLBACK_PAIR} for r in range(REPEATS)]
    # The median run of each kind (by train time); the runs alternate, so drifts in machine load hit all alike.
    runs = {kind: sorted((t[kind] for t in trials), key=lambda r: r["seconds"])[REPEATS // 2] for kind in trials[0]}
    losses = {kind: [t[kind]["validation_loss"] for t in trials] for kind in KINDS}
    rate = {kind: supervised / r["seconds"] for kind, r in runs.items()}
    pad = {kind: r["padded"] / r["positions"] for kind, r in runs.items()}
    ratio = rate["ours"] / rate["stock"]
    per_step = {kind: runs[kind]["seconds"] / runs[kind]["steps"] for kind in CALLBACK_PAIR}
    overhead = per_step["ours-callbacks"] / per_step["ours-no-callbacks"] - 1
    # Same objective, same schedule, only the batching differs: the difference of the mean losses against its
    # standard error over the seeds says whether length-grouped batches learn what random ones do.
    ours, reference = losses["ours"], losses["stock-assistant-loss"]
    gap = statistics.mean(ours) - statistics.mean(reference)
    error = math.sqrt((statistics.variance(ours) + statistics.variance(reference)) / REPEATS)
    rows = [
        f"| {kind} | {r['steps']} | {r['seconds']:.1f} | {rate[kind]:.0f} | {pad[kind]:.1%} | {r['peak_rss_gib']:.2f} "
        f"| {r['first_step_s']:.1f} | {statistics.mean(losses[kind]):.3f} ± {statistics.stdev(losses[kind]):.3f} |"
        for kind, r in runs.items()
        if kind in KINDS
    ]
    append_section(report, [
        "",
        f"## Training throughput — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores",
        "",
        f"Tiny debug model, plain LoRA r=16 in fp32 on CPU, {EPOCHS} epochs over {TRAIN_ROWS} conversations (sample "
        f"set + gin), {supervised} assistant tokens per epoch, batch {BATCH} × {ACCUMULATION} accumulation steps, "
        f"learning rate {LEARNING_RATE:g}, max length 1024. Each run in its own process; {REPEATS} alternating "
        "repeats, each with its own seed: times are the median run, losses the mean ± sd over the seeds. "
        f"Command: `make bench`. Targets: ours ≥ {TARGET_RATIO}× stock supervised tokens/s, padding ≤ "
        f"{TARGET_PADDING:.0%}, the same final loss within noise.",
        "",
        "| run | steps | train s | supervised tok/s | padding | peak RSS GiB | s to 1st step | val loss (assistant) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        "",
        f"**Supervised tokens/s, ours / stock: {ratio:.2f}×; ours with gradient checkpointing (like stock) / "
        f"stock: {rate['ours-checkpointing'] / rate['stock']:.2f}×; forced packing / stock: "
        f"{rate['ours-packed'] / rate['stock']:.2f}×.**",
        "",
        f"**Final loss, ours minus stock batching with our objective and schedule (`stock-assistant-loss`): "
        f"{gap:+.3f} ± {error:.3f} (standard error over the seeds; {abs(gap) / error:.1f} of them).** `stock` "
        "also trains on system and user tokens, so its loss is not comparable; forced packing takes fewer, larger "
        "steps, so the same epochs are fewer optimizer updates. Train s is the training loop; `trainer train`'s "
        f"whole `train_runtime` (with its final evaluation and save) was {runs['ours']['train_runtime']:.1f} s.",
        "",
        f"Our callbacks' per-step overhead (metrics log, checkpoint manifests; a save every 20 steps and a log line "
        f"every step in both runs): {per_step['ours-no-callbacks'] * 1000:.1f} → "
        f"{per_step['ours-callbacks'] * 1000:.1f} ms/step, **{overhead:+.1%}** (target ≤ 3%).",
        "",
    ])  # fmt: skip


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
    else:
        main(report_path(__doc__))
