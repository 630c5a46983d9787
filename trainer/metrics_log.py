"""The training metrics log, `metrics.jsonl`: one JSON object a line, `{"step", "epoch", "time", ...metrics}`.

Training appends to it (losses, learning rate, `eval_*`, `eval_gen_*`), each checkpoint carries a copy (so a resume
rewinds it), and the evaluation report plots it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"


def append_metrics(path: Path, step: int, epoch: float | None, values: dict[str, Any]) -> None:
    """Append one line: the step, the epoch, the wall-clock time and `values`."""
    record = {"step": step, "epoch": epoch, "time": time.time(), **values}
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(record) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Every line of the log, in order; [] where there is no log."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
