"""`make quality`'s runs: each one's name, title and the `--set`s that make it, where its files are, and the reader of
what its evaluation wrote (benchmarks/quality.py runs them, benchmarks/quality_report.py writes the report)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.checkpoints.resolve import resolve_checkpoint
from trainer.config_file import load_config
from trainer.data_config import GenerationMix
from trainer.errors import TrainerError
from trainer.evaluation.report import PREDICTIONS_FILE
from trainer.report_format import REPORT_FILE

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs/training/quality.yaml"


@dataclass(frozen=True)
class Run:
    """One benchmark run: the config's settings with these `--set`s, in outputs/quality/<name>/."""

    name: str
    title: str
    overrides: tuple[str, ...] = ()
    answers: str | None = None  # another run whose test rows (and base answers) this one uses
    export: bool = False
    trained_by: str | None = None  # another run whose model this one evaluates: it trains none


MIX = "data.generation.mix"
# A dataset of benchmarks/howto's questions alone, for the test split: chi's API index (grounding, the compile check),
# nothing generated, no general prompts (the run of the model it evaluates answered them).
HOWTO = (
    "data.examples_dir=data/raw/examples/none", "data.test_examples_dir=benchmarks/howto",
    "data.generation.probes=false", "evaluation.general_prompts=false",
    *(f"{MIX}.{kind}=0" for kind in GenerationMix.model_fields),
)  # fmt: skip

# The mix before the fact kinds (issue 32), and three epochs of its 317 training conversations.
BEFORE = (
    f"{MIX}.which_symbol=0", f"{MIX}.usage=0", f"{MIX}.call_in_context=0", f"{MIX}.contrast=0", f"{MIX}.no_such_api=0",
    f"{MIX}.detail=0",
    f"{MIX}.what_does=1", f"{MIX}.signature=1", "data.generation.max_per_symbol=4", "training.max_steps=240",
)  # fmt: skip
# The config's steps are three epochs of chi's training conversations (its comment).
EPOCH_STEPS = -(-load_config(CONFIG).training.max_steps // 3)
RUNS = {
    run.name: run
    for run in (
        Run("chi", "chi, today's data mix, three epochs", export=True),
        Run("chi-before", "chi, the data mix before the fact kinds, three epochs of it", BEFORE, answers="chi"),
        Run(
            "chi-lr3e-4", "chi, today's data mix, one epoch at learning rate 3e-4",
            (f"training.max_steps={EPOCH_STEPS}", "training.learning_rate=3.0e-4"), "chi",
        ),
        Run("chi-1epoch", "chi, today's data mix, one epoch", (f"training.max_steps={EPOCH_STEPS}",), "chi"),
        Run("chi-2epochs", "chi, today's data mix, two epochs", (f"training.max_steps={2 * EPOCH_STEPS}",), "chi"),
        Run("chi-4epochs", "chi, today's data mix, four epochs", (f"training.max_steps={4 * EPOCH_STEPS}",), "chi"),
        # The same data and steps, another training seed (LoRA's initial weights, the batches' order): how far a
        # figure moves with the seed alone, to read the others' differences by.
        Run("chi-seed1", "chi, today's data mix, three epochs, training seed 1", ("training.seed=1",), "chi"),
        Run(
            "chi-before-seed1", "chi, the data mix before the fact kinds, three epochs of it, training seed 1",
            (*BEFORE, "training.seed=1"), "chi",
        ),
        Run("chi-howto", "chi, today's data mix, on how-to questions kept out of the data", HOWTO, trained_by="chi"),
        Run(
            "chi-before-howto", "chi, the data mix before the fact kinds, on the same how-to questions", HOWTO,
            "chi-howto", trained_by="chi-before",
        ),
        Run(
            "chi-before-seed1-howto", "chi, the data mix before the fact kinds, training seed 1, on the same how-to "
            "questions", HOWTO, "chi-howto", trained_by="chi-before-seed1",
        ),
        Run(
            "chi-seed1-howto", "chi, today's data mix, training seed 1, on the same how-to questions", HOWTO,
            "chi-howto", trained_by="chi-seed1",
        ),
        Run(
            "chi-2epochs-howto", "chi, today's data mix, two epochs, on the same how-to questions", HOWTO,
            "chi-howto", trained_by="chi-2epochs",
        ),
        Run(
            "gin", "gin, today's data mix, three epochs (no hand-written examples: no how-to rows)",
            ("data.sources=[{url: /usr/share/gocode/src/github.com/gin-gonic/gin, name: gin}]",
             "data.examples_dir=data/raw/examples/none", "evaluation.limit=248",
             "training.max_steps=924"),  # three epochs of gin's 1,231 training conversations at batch 4
        ),
    )
}  # fmt: skip


def folders(run: Run) -> tuple[str, ...]:
    """The `--set`s that put a run's data, checkpoints, logs and report in its own folder."""
    out = f"outputs/quality/{run.name}"
    return (
        f"data.output_dir={out}/data", f"training.output_dir={out}/checkpoints", f"training.logging_dir={out}/logs",
        f"evaluation.output_dir={out}/report", f"export.output_dir={out}",
    )  # fmt: skip


def settings_of(run: Run) -> tuple[str, ...]:
    return (*folders(run), *run.overrides)


def model_run(run: Run) -> Run:
    """The run that trains the model `run` evaluates: itself, or its trained_by."""
    return RUNS[run.trained_by] if run.trained_by else run


def model_settings(config_file: Path, run: Run) -> tuple[str, ...]:
    """The `--set`s of a run's synthesis, training and export: its own, with the checkpoints of its model's run."""
    if not run.trained_by:
        return settings_of(run)
    return (*settings_of(run), f"training.output_dir={config_of(config_file, model_run(run)).training.output_dir}")


def evaluation_settings(config_file: Path, run: Run) -> tuple[str, ...]:
    """The `--set`s of a run's evaluation: its model, asked its own test rows, or those of the run it answers for
    (without the base, whose answers to them are in that run's report)."""
    if not run.answers:
        return model_settings(config_file, run)
    rows = config_of(config_file, RUNS[run.answers]).data.output_dir
    return (*model_settings(config_file, run), f"data.output_dir={rows}", "evaluation.baseline=false")


def config_of(config_file: Path, run: Run):
    """The config a run's stages see."""
    return load_config(config_file, settings_of(run))


def checkpoint_of(config_file: Path, run: Run) -> Path | None:
    """The last complete checkpoint of the model `run` evaluates (its model run's), if it has one."""
    try:
        return resolve_checkpoint(config_of(config_file, model_run(run)), None)
    except TrainerError:
        return None


def trained_on(config_file: Path, run: Run) -> Path:
    """The data folder of the model a run evaluates: its own, or that of the run that trained it."""
    return ROOT / config_of(config_file, model_run(run)).data.output_dir


Results = tuple[dict[str, Any], list[dict[str, Any]]]  # a run's report.json and predictions.jsonl


def results(config_file: Path, run: Run) -> Results | None:
    """A run's report.json and predictions.jsonl as its evaluation wrote them; None before it is evaluated."""
    folder = ROOT / config_of(config_file, run).evaluation.output_dir
    if not (folder / REPORT_FILE).is_file():
        return None
    report = json.loads((folder / REPORT_FILE).read_text(encoding="utf-8"))
    return report, [json.loads(line) for line in (folder / PREDICTIONS_FILE).open(encoding="utf-8")]
