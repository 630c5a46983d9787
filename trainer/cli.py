"""`trainer` command line: one function per stage, plus `pipeline` for all four in order.

Every command takes `--config PATH` and repeatable `--set dotted.key=value`. Problems a user can fix end with one
`error:` line on stderr and exit code 2; heavy libraries are imported only when a stage runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from trainer.config import Config
from trainer.config_file import DEFAULT_CONFIG
from trainer.data_config import GoSource
from trainer.errors import TrainerError
from trainer.exits import INTERRUPTED, exit_code_of, interrupted, noticing_ctrl_c
from trainer.stage_config import config_flag, endpoint_override, given_flags, stage_config
from trainer.supervisor import run_uri_of, supervise
from trainer.usage import version_text

HELP = {"help_option_names": ["-h", "--help"]}  # subcommands inherit it
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, context_settings=HELP)
ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Run config YAML")]
SetOption = Annotated[list[str], typer.Option("--set", help="Override a key: dotted.key=value (repeatable)")]
CheckpointOption = Annotated[
    str | None,
    typer.Option(
        "--checkpoint", help="Adapter checkpoint: a folder or s3://…/checkpoint-N (default: the newest complete one)"
    ),
]


def _synthesize(config: Config, run_uri: str | None = None) -> None:
    from trainer.synthesis.summary import summary_lines
    from trainer.synthesis.synthesize import synthesize

    print("\n".join(summary_lines(synthesize(config).manifest, config.data.output_dir)))
    if run_uri:
        from trainer.artifacts import part_uri
        from trainer.storage import upload_folder

        upload_folder(config.data.output_dir, part_uri(run_uri, "data"), force=True)


def _train(config: Config, run_uri: str | None = None, pull: bool = True) -> Path:
    """`pull`: read the run's data first (a single-stage command on a fresh machine); off where it is local."""
    from trainer.artifacts import pull_part, update_run
    from trainer.checkpoints.folder import step_of
    from trainer.training.train import train

    if run_uri and pull:
        pull_part(run_uri, "data", config.data.output_dir)
    result = train(config)
    print(f"train: adapter at {result.final_checkpoint}")
    if run_uri and _global_rank_zero():
        update_run(run_uri, step=step_of(result.final_checkpoint.name))
    return result.final_checkpoint


@contextmanager
def _training_stage(run_uri: str | None, run_name: str, done: str | None = None) -> Iterator[None]:
    """run.json kept current around training and, around that, the preemption notice listened for (notice.py): a
    hook waiting for this process returns once run.json says where it stopped."""
    from trainer.artifacts import recorded_stage
    from trainer.training.notice import listening

    with listening(), recorded_stage(run_uri, "train", run_name, done):
        yield


def _global_rank_zero() -> bool:
    """Under torchrun every rank runs the command; one writes run.json (data pulls are atomic per file)."""
    return os.environ.get("RANK", "0") == "0"


def _evaluate(
    config: Config,
    checkpoint: str | None,
    predictions: Path | None = None,
    run_uri: str | None = None,
    pull: bool = True,
) -> dict:
    """Evaluate the model (or, with `predictions`, score that file without one) and print the headline."""
    from trainer.evaluation.report import score_predictions
    from trainer.report_format import REPORT_FILE, headline, summary_line

    if predictions is not None:
        from trainer.evaluation.compile import compiler_for

        report = score_predictions(
            predictions, config.evaluation.symbols, config.evaluation.output_dir, compiler_for(config)
        )
    elif config.evaluation.endpoints:
        from trainer.evaluation.endpoint import evaluate_endpoints

        report = evaluate_endpoints(config)
    else:
        from trainer.artifacts import pull_part
        from trainer.evaluation.evaluate import evaluate

        if run_uri and pull:
            pull_part(run_uri, "data", config.data.output_dir)
        report = evaluate(config, checkpoint)
    print(f"evaluate: {summary_line(report)} → {config.evaluation.output_dir / REPORT_FILE}")
    if run_uri:
        from trainer.artifacts import part_uri, update_run
        from trainer.storage import upload_folder

        upload_folder(config.evaluation.output_dir, part_uri(run_uri, "report"), force=True)
        update_run(run_uri, metrics=headline(report))
    return report


def _export(
    config: Config, checkpoint: str | None, target: Path | None = None, run_uri: str | None = None, pull: bool = True
) -> None:
    from trainer.export.export import export_model

    if run_uri and pull:
        from trainer.artifacts import pull_part

        try:  # the model card quotes the evaluation of the same checkpoint when there is one
            pull_part(run_uri, "report", config.evaluation.output_dir)
        except TrainerError as exc:
            print(f"export: no evaluation report to quote ({exc})")
    print(f"export: merged model at {export_model(config, checkpoint, target)}")


OutOption = Annotated[Path | None, typer.Option("--out", help="Where this stage writes (default: from the config)")]
RunUriOption = Annotated[
    str | None,
    typer.Option(
        "--run-uri",
        help="s3://BUCKET/runs/RUN_NAME: read inputs from and write outputs and run.json to that run's layout",
    ),
]


@app.command()
def synthesize(
    config: ConfigOption = DEFAULT_CONFIG,
    set_: SetOption = [],  # noqa: B006
    source: Annotated[
        list[str],
        typer.Option(
            "--source",
            help="Another Go repo to learn from, added to the config's data.sources: path or git URL (repeatable)",
            show_default=False,
        ),
    ] = [],  # noqa: B006
    out: OutOption = None,
    run_uri: RunUriOption = None,
) -> None:
    """Validate chat examples, extract Go sources' API, generate conversations, deduplicate, split and save."""
    from trainer.artifacts import recorded_stage

    cfg = stage_config(config, set_, run_uri, {"--out": out}, "data.output_dir")
    try:
        cfg.data.sources.extend(GoSource(url=url) for url in source)
    except ValidationError as exc:
        raise TrainerError(f"--source: {exc.errors()[0]['msg']}") from None
    with recorded_stage(run_uri, "synthesize", cfg.training.run_name):
        _synthesize(cfg, run_uri)


@app.command()
def train(
    config: ConfigOption = DEFAULT_CONFIG,
    set_: SetOption = [],  # noqa: B006
    out: OutOption = None,
    run_uri: RunUriOption = None,
) -> None:
    """Finetune a LoRA/QLoRA adapter on the processed dataset, resuming from the latest checkpoint."""
    cfg = stage_config(config, set_, run_uri, {"--out": out}, "training.output_dir")
    with _training_stage(run_uri if _global_rank_zero() else None, cfg.training.run_name):
        _train(cfg, run_uri)


@app.command()
def evaluate(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    set_: SetOption = [],  # noqa: B006
    checkpoint: CheckpointOption = None,
    limit: Annotated[
        int | None, config_flag("evaluation.limit", "--limit", "Only the first N test conversations", True)
    ] = None,
    max_new_tokens: Annotated[
        int | None, config_flag("evaluation.max_new_tokens", "--max-new-tokens", "Generation length limit", True)
    ] = None,
    baseline: Annotated[
        bool, config_flag("evaluation.baseline", "--baseline", "Also score the base model; report the deltas")
    ] = False,
    predictions: Annotated[
        Path | None, typer.Option(help="Score this predictions.jsonl instead of generating (no model loaded)")
    ] = None,
    symbols: Annotated[
        Path | None, config_flag("evaluation.symbols", "--symbols", "symbols.jsonl for API grounding")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Report folder (default: evaluation.output_dir)")] = None,
    model: Annotated[
        str | None,
        config_flag(
            "evaluation.model",
            "--model",
            "An exported model folder, or `base`; with --endpoint, the served model's name",
        ),
    ] = None,
    endpoint: Annotated[
        list[str],
        config_flag(
            "evaluation.endpoints",
            "--endpoint",
            "Score this OpenAI-compatible server (base URL, e.g. http://host:8000/v1) instead of a local "
            "model: URL=MODEL, or URL with --model MODEL; repeat to compare several in one report",
        ),
    ] = [],  # noqa: B006
    api_key_env: Annotated[
        str | None, typer.Option(help="With --endpoint: the environment variable holding the servers' API key")
    ] = None,
    backend: Annotated[
        str | None,
        config_flag("evaluation.backend", "--backend", "What generates: transformers | vllm | auto", True),
    ] = None,
    run_uri: RunUriOption = None,
) -> None:
    """Score an adapter on the test split (or a predictions file): loss, text, tool use, Go code, API grounding."""
    from trainer.artifacts import recorded_stage

    flags = given_flags(ctx) | {"--out": out}
    if api_key_env and not endpoint:
        raise TrainerError("--api-key-env: only with --endpoint")
    if endpoint:  # --model names the served model there, not evaluation.model
        flags |= {"--endpoint": endpoint_override(endpoint, model, api_key_env), "--model": None}
    cfg = stage_config(config, set_, run_uri, flags, "evaluation.output_dir")
    if cfg.evaluation.endpoints and run_uri:  # the run's report and run.json describe the model it trained
        raise TrainerError("--endpoint with --run-uri: pull the run's data and score the servers into --out")
    ignored = [flag for flag, value in (("--checkpoint", checkpoint), ("--predictions", predictions)) if value]
    if cfg.evaluation.endpoints and ignored:
        raise TrainerError(f"{ignored[0]}: not with --endpoint (the servers give the answers)")
    with recorded_stage(run_uri, "evaluate", cfg.training.run_name):
        _evaluate(cfg, checkpoint, predictions, run_uri)


@app.command()
def export(
    ctx: typer.Context,
    config: ConfigOption = DEFAULT_CONFIG,
    set_: SetOption = [],  # noqa: B006
    checkpoint: CheckpointOption = None,
    dtype: Annotated[str | None, config_flag("export.dtype", "--dtype", "bf16 | fp16 | fp32", True)] = None,
    adapter_only: Annotated[
        bool, config_flag("export.adapter_only", "--adapter-only", "Write the PEFT adapter folder only")
    ] = False,
    upload: Annotated[
        str | None, config_flag("export.upload", "--upload", "s3://bucket/prefix to upload the folder to")
    ] = None,
    force: Annotated[
        bool, config_flag("export.force", "--force", "Overwrite a finished upload at --upload (or the run's model/)")
    ] = False,
    verify: Annotated[
        bool | None, config_flag("export.verify", "--verify/--no-verify", "Check logits after writing", True)
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="The model folder (default: export.output_dir/RUN_NAME)")
    ] = None,
    run_uri: RunUriOption = None,
) -> None:
    """Merge the adapter into the base model, shard by shard, into a safetensors folder transformers and vLLM load."""
    from trainer.artifacts import recorded_stage

    cfg = stage_config(config, set_, run_uri, given_flags(ctx))
    with recorded_stage(run_uri, "export", cfg.training.run_name):
        _export(cfg, checkpoint, out, run_uri)


@app.command()
def pipeline(
    config: ConfigOption = DEFAULT_CONFIG,
    set_: SetOption = [],  # noqa: B006
    run_uri: RunUriOption = None,
    skip_synthesize: Annotated[
        bool,
        typer.Option("--skip-synthesize", help="Use the processed data there is (data.output_dir, or the run's data/)"),
    ] = False,
    redo: Annotated[
        bool, typer.Option("--redo", help="Run every stage again over a completed --run-uri run's artifacts")
    ] = False,
) -> None:
    """synthesize → train → evaluate → export, with one config; with --run-uri, every artifact lands in S3 and a
    recovered spot job resumes training from the run's checkpoints and redoes only what is missing."""
    from trainer.artifacts import begin_run, recorded_stage

    cfg = stage_config(config, set_, run_uri)
    if cfg.evaluation.endpoints:
        raise TrainerError("evaluation.endpoints: the pipeline evaluates the model it trains; score servers apart")
    name = cfg.training.run_name
    if run_uri:
        begin_run(run_uri, name, redo)
    if not skip_synthesize:
        with recorded_stage(run_uri, "synthesize", name, done="running"):
            _synthesize(cfg, run_uri)
    # Each stage's inputs are local once an earlier stage of this command made or pulled them: no second download.
    with _training_stage(run_uri, name, done="running"):
        _train(cfg, run_uri, pull=skip_synthesize)
    with recorded_stage(run_uri, "evaluate", name, done="running"):
        _evaluate(cfg, None, run_uri=run_uri, pull=False)
    with recorded_stage(run_uri, "export", name):
        _export(cfg, None, run_uri=run_uri, pull=False)
    if run_uri:
        print(f"pipeline: run complete → {run_uri}")


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", help="The trainer's version and its libraries' versions", is_eager=True)
    ] = False,
) -> None:
    """Finetune an LLM with LoRA/QLoRA on a Go framework's API: synthesize → train → evaluate → export."""
    if version:
        print(version_text())
        raise typer.Exit()
    _help_without_command(ctx)


def _help_without_command(ctx: typer.Context) -> None:
    """A group named alone (`trainer`, `trainer artifacts`) prints its help and succeeds."""
    if ctx.invoked_subcommand is None:
        print(ctx.get_help())
        raise typer.Exit()


artifacts_app = typer.Typer(
    help="List, pull and push run artifacts in S3.", invoke_without_command=True, callback=_help_without_command
)
app.add_typer(artifacts_app, name="artifacts")


@artifacts_app.command("ls")
def artifacts_ls(uri: Annotated[str, typer.Argument(help="s3://BUCKET/runs/")]) -> None:
    """Runs under URI with status, step, loss, token accuracy and size."""
    from trainer.artifacts import format_runs, list_runs

    print(format_runs(list_runs(uri)))


@artifacts_app.command("pull")
def artifacts_pull(
    uri: Annotated[str, typer.Argument(help="s3://BUCKET/runs/RUN_NAME or any s3:// prefix")],
    out: Annotated[Path, typer.Option("--out", help="Destination folder")],
    what: Annotated[str | None, typer.Option(help="data | checkpoints | report | model (default: all)")] = None,
) -> None:
    """Download with sha256 checks; an interrupted pull resumes; keys escaping --out are refused."""
    from trainer.artifacts import PARTS, pull

    if what is not None and what not in PARTS:
        raise TrainerError(f"--what {what!r}: expected one of {', '.join(PARTS)}")
    downloaded, present = pull(uri, out, what)
    print(f"pull: {downloaded} downloaded, {present} already present → {out}")


@artifacts_app.command("push")
def artifacts_push(
    folder: Annotated[Path, typer.Argument(help="Local folder")],
    uri: Annotated[str, typer.Argument(help="s3://BUCKET/prefix")],
    force: Annotated[bool, typer.Option("--force", help="Overwrite a finished upload at URI")] = False,
) -> None:
    """Upload a folder, SHA256SUMS last; a finished upload is not overwritten unless --force."""
    from trainer.storage import upload_folder

    if not folder.is_dir():
        raise TrainerError(f"{folder}: folder not found")
    print(f"push: {len(upload_folder(folder, uri, force=force))} files → {uri}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script and of `scripts/*.py`; returns the exit code."""
    # A checkpoint from a shared bucket holds pickles (optimizer.pt, rng_state.pth): torch.load in this process and
    # its children unpickles tensors and plain data only, never code, whatever a library passes.
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    argv = list(sys.argv[1:] if argv is None else argv)
    with noticing_ctrl_c() as ctrl_c:
        try:
            if run_uri := run_uri_of(argv):
                return supervise(argv, run_uri)
            exit_code = app(args=argv, prog_name="trainer", standalone_mode=False)
        except (Exception, KeyboardInterrupt) as exc:
            return exit_code_of(exc, ctrl_c())
    if exit_code == INTERRUPTED:  # typer turns Ctrl-C (KeyboardInterrupt) into a silent return of 130
        return interrupted()
    # typer returns an exit code for --help, --version and a command that raised typer.Exit; a command's None is 0
    return exit_code if isinstance(exit_code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
