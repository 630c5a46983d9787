"""Trainer callbacks: the JSONL metrics log, and sealing/mirroring checkpoints with a graceful SIGTERM stop."""

from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from trainer.checkpoints.folder import SaveFailed, checkpoint_name
from trainer.checkpoints.sealed import seal_config
from trainer.checkpoints.store import CheckpointStore
from trainer.config import Config
from trainer.dotted import lookup
from trainer.evaluation.generation import Decoding, build_prompts, generate, prediction_records
from trainer.evaluation.metrics import score
from trainer.failpoints import maybe_kill, maybe_terminate
from trainer.metrics_log import METRICS_FILE, append_metrics
from trainer.report_format import GENERATION_HEADLINE


class JsonlMetrics(TrainerCallback):
    """Appends every logged metric dict, with its step, to `logging_dir/metrics.jsonl`."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            append_metrics(self.path, state.global_step, state.epoch, logs)


class GenerationEval(TrainerCallback):
    """After each evaluation, answers a fixed subset of validation prompts and logs generation metrics (`eval_gen_*`
    in metrics.jsonl): the run then shows whether answers, tool calls and API names improve, not only the loss."""

    def __init__(self, rows: list[dict], tokenizer, symbols, decoding: Decoding, batch_size: int, log: Path):
        """`symbols`: the SymbolIndex for API grounding, or None."""
        self.rows, self.tokenizer, self.symbols, self.log = rows, tokenizer, symbols, log
        self.decoding, self.batch_size = decoding, batch_size
        self.prompts = None  # built at the first evaluation

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or model is None:
            return
        self.prompts = self.prompts or build_prompts(self.tokenizer, self.rows)
        was_training = model.training
        model.eval()
        answers = generate(model, self.tokenizer, self.prompts, self.decoding, self.batch_size)
        model.train(was_training)
        report = score(prediction_records(self.prompts, answers), self.symbols)
        values = {f"eval_gen_{key.split('.')[-1]}": lookup(report, key) for key in GENERATION_HEADLINE}
        append_metrics(self.log, state.global_step, state.epoch, values)


def restore_metrics(checkpoint: Path, log: Path) -> None:
    """Resuming from a checkpoint rewinds the metrics log to it, so every step appears exactly once."""
    saved = checkpoint / METRICS_FILE
    log.parent.mkdir(parents=True, exist_ok=True)
    if saved.is_file():
        shutil.copyfile(saved, log)
    else:
        log.unlink(missing_ok=True)


class PreemptionGuard(TrainerCallback):
    """Seals each checkpoint (trained config, metrics log copy, manifest) and mirrors it; on SIGTERM or a preemption
    notice (the file `notice`, see notice.py) or SIGINT (Ctrl-C) the step in flight finishes, every process saves
    that same step, and training stops."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, store: CheckpointStore, metrics_log: Path, config: Config, notice: Path):
        self.store, self.metrics_log, self.config, self.notice = store, metrics_log, config, notice
        self.received: signal.Signals | None = None  # the signal this process got
        self.noticed = False  # whether this process found the preemption notice
        self.stopped = False  # whether training stopped on a signal, this process's or another rank's
        self.previous: dict[int, object] = {}

    def install(self) -> None:
        self.previous = {number: signal.signal(number, self._on_signal) for number in self.SIGNALS}

    def uninstall(self) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _on_signal(self, signum, frame) -> None:
        # Only a flag here: the step in flight finishes, then on_step_end asks for a save and a stop. A second
        # Ctrl-C gets Python's default: stop at once.
        self.received = signal.Signals(signum)
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, self.previous.get(signal.SIGINT, signal.default_int_handler))

    def on_step_end(self, args, state, control, **kwargs):
        maybe_kill("step", state.global_step)
        maybe_terminate(state.global_step)
        self.noticed = self.noticed or self.notice.exists()  # one stat a step: nothing next to a step's seconds
        # Every rank learns of a signal or notice any rank got, at the same step: stopping apart would leave one
        # waiting for the others in a collective.
        if any_process(self.received is not None or self.noticed):
            self.stopped = True
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / checkpoint_name(state.global_step)
        maybe_kill("save", state.global_step)
        if state.is_world_process_zero:
            try:
                self.store.publish(folder, before_manifest=self._add_run_files)
            except OSError as exc:
                raise SaveFailed(folder, exc) from exc

    def _add_run_files(self, folder: Path) -> None:
        """What a checkpoint carries besides transformers' files: the config it was trained with, the metrics log."""
        seal_config(self.config, folder)
        if self.metrics_log.is_file():
            shutil.copyfile(self.metrics_log, folder / METRICS_FILE)


def any_process(flag: bool) -> bool:
    """True on every process if `flag` is true on any: a decision to save or stop must be the same on all ranks, or
    they wait for each other in different collectives."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    value = torch.tensor([int(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


class TimedSaves(TrainerCallback):
    """Asks for a checkpoint once `minutes` have passed since the last save, so a preemption loses at most that much
    work whatever the step interval and the data size."""

    def __init__(self, minutes: float):
        self.interval, self.last = minutes * 60, time.monotonic()

    def on_save(self, args, state, control, **kwargs):
        self.last = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if any_process(time.monotonic() - self.last >= self.interval):
            control.should_save = True
        return control
