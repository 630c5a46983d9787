"""What training prints while it runs: each of transformers' log entries as one JSON line with real numbers
(transformers prints a Python dict of strings, `{'loss': '8.234', …}`), under a progress bar with ETA on a terminal.
The same entries also go to metrics.jsonl (callbacks.JsonlMetrics)."""

from __future__ import annotations

import json
from typing import Any

from tqdm.auto import tqdm
from transformers import PrinterCallback, ProgressCallback, TrainerCallback

# TRL counts training tokens under this name at evaluation: not the validation split's tokens, so not shown.
MISLEADING = {"eval_num_tokens"}


def _rounded(value: Any) -> Any:
    return float(f"{value:.4g}") if isinstance(value, float) else value


class JsonLogLines(TrainerCallback):
    """One line per log entry: `{"step": N, "loss": 8.234, …}`, printed above the bar where there is one."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            values = {key: _rounded(value) for key, value in logs.items() if key not in MISLEADING}
            tqdm.write(json.dumps({"step": state.global_step, **values}))


class ProgressBar(ProgressCallback):
    """transformers' bars (steps with ETA, evaluation), without its own print of each log entry."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass


def show_progress(trainer) -> None:
    """Replace transformers' log printing (a bar and dicts, or dicts alone) with ours."""
    show_bar = not trainer.args.disable_tqdm
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    for callback in (ProgressBar(),) if show_bar else ():
        trainer.add_callback(callback)
    trainer.add_callback(JsonLogLines())
