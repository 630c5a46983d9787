"""Bad input at the command line: exit code 2, one `error:` line, no traceback."""

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import DEBUG_CONFIG, REPO, debug_overrides, set_args
from trainer.cli import main
from trainer.errors import TrainerError


def run(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err


def sets(tmp_path, model_cache, examples=None):
    return set_args(debug_overrides(tmp_path, model_cache, *([examples] if examples else [])))


def assert_one_error_line(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in err


def cli(*args, cwd=REPO):
    """`trainer args` in a fresh process, as a user's shell runs it (help on one wide line per option)."""
    return subprocess.run(
        [sys.executable, "-m", "trainer.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        env={**os.environ, "COLUMNS": "400"},
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trian"], "error: trainer: no such command 'trian' (did you mean 'train'?)"),
        (
            ["train", "--max-steps", "4"],
            "error: trainer train: no such option --max-steps (did you mean --set training.max_steps=…?)",
        ),
        (["evaluate", "--limt", "3"], "error: trainer evaluate: no such option --limt (did you mean --limit?)"),
        (["artifacts", "pull", "s3://b/x"], "error: trainer artifacts pull: missing option '--out'"),
        (
            ["evaluate", "--limit", "abc"],
            "error: trainer evaluate: invalid value for '--limit': Input should be a "
            "valid integer, unable to parse string as an integer",
        ),
        (["train", "surplus"], "error: trainer train: got unexpected extra argument(s) (surplus)"),
        (["evaluate", "--checkpoint", "/nonexistent"], "error: /nonexistent: checkpoint not found"),
        (
            ["train", "--set", "trainig.max_steps=4"],
            "error: invalid config: --set trainig.max_steps=4: trainig: unknown key (did you mean 'training'?)",
        ),
        (
            ["train", "--set", "training.save_step=4"],
            "error: invalid config: --set training.save_step=4: "
            "training.save_step: unknown key (did you mean 'save_steps'?)",
        ),
        (
            ["evaluate", "--limit", "0"],
            "error: invalid config: --limit 0: evaluation.limit: Input should be greater than 0",
        ),
        (
            ["export", "--dtype", "fp8"],
            "error: invalid config: --dtype fp8: export.dtype: Input should be 'bf16', 'fp16' or 'fp32'",
        ),
        (
            ["evaluate", "--backend", "vlm"],
            "error: invalid config: --backend vlm: evaluation.backend: Input should "
            "be 'transformers', 'vllm' or 'auto'",
        ),
    ],
)
def test_every_usage_slip_is_one_error_line_naming_the_option_and_exit_2(args, message):
    config = ["--config", DEBUG_CONFIG] if args[0] in ("train", "evaluate", "export") and len(args) > 1 else []
    result = cli(*args, *config)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == message + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("args", [[], ["-h"], ["--help"], ["train", "-h"], ["artifacts"], ["artifacts", "pull", "-h"]])
def test_help_alone_or_with_h_prints_usage_and_succeeds(args):
    result = cli(*args)
    assert (result.returncode, result.stderr) == (0, "")
    assert "Usage: trainer" in result.stdout and "--help" in result.stdout and "-h" in result.stdout


@pytest.mark.slow
def test_help_shows_the_config_defaults_flags_override_and_what_force_means():
    evaluate = cli("evaluate", "-h").stdout
    assert "from evaluation.max_new_tokens: 256" in evaluate and "from evaluation.backend: transformers" in evaluate
    assert "from export.dtype: bf16" in cli("export", "-h").stdout
    assert "added to the config's data.sources" in cli("synthesize", "-h").stdout
    pipeline = cli("pipeline", "-h").stdout
    assert "--redo" in pipeline and "--force" not in pipeline
    assert "Overwrite a finished upload" in cli("artifacts", "push", "-h").stdout


@pytest.mark.slow
def test_version_prints_the_package_and_library_versions():
    from importlib.metadata import version

    result = cli("--version")
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert lines[0] == f"trainer {version('trainer')}"
    assert f"  transformers {version('transformers')}" in lines[1:]
    assert any(line.startswith("  torch ") for line in lines)


def test_bad_jsonl_names_file_and_line(capsys, tmp_path, model_cache, examples_dir):
    (examples_dir / "bad.jsonl").write_text('{"messages": [}\n')
    code, err = run(capsys, "synthesize", "--config", DEBUG_CONFIG, *sets(tmp_path, model_cache, examples_dir))
    assert code == 2
    assert_one_error_line(err, f"{examples_dir / 'bad.jsonl'}:1: invalid JSON")


def test_bad_config_key_names_the_key(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("model: {name_or_path: x}\ntraining:\n  save_step: 10\n")
    code, err = run(capsys, "train", "--config", config)
    assert code == 2
    assert_one_error_line(err, str(config), "training.save_step: unknown key (did you mean 'save_steps'?)")


def test_missing_checkpoint(capsys, tmp_path, model_cache):
    args = sets(tmp_path, model_cache)
    code, err = run(capsys, "evaluate", "--config", DEBUG_CONFIG, *args, "--checkpoint", tmp_path / "checkpoint-9")
    assert code == 2
    assert_one_error_line(err, f"{tmp_path / 'checkpoint-9'}: checkpoint not found")
    code, err = run(capsys, "export", "--config", DEBUG_CONFIG, *args)
    assert code == 2
    assert_one_error_line(err, "no checkpoint found", "trainer train")


def test_synthesize_prints_three_records_of_a_list_and_where_the_rest_are(capsys, tmp_path, model_cache, sample_copy):
    (sample_copy / "bad.jsonl").write_text("not json\n" * 5)
    skip = set_args(["data.on_error=skip", "data.sources=[]"])
    assert main(["synthesize", "--config", str(DEBUG_CONFIG), *sets(tmp_path, model_cache, sample_copy), *skip]) == 0
    manifest = tmp_path / "processed/manifest.json"
    skipped = json.loads(manifest.read_text())["skipped"]["records"]
    assert len(skipped) == 5
    shown = capsys.readouterr().out.split("  skipped: 5\n")[1].splitlines()[:4]
    assert shown == [*(f"    {record}" for record in skipped[:3]), f"    … 2 more in {manifest}"]


def test_train_before_synthesize_says_what_to_run(capsys, tmp_path, model_cache):
    code, err = run(capsys, "train", "--config", DEBUG_CONFIG, *sets(tmp_path, model_cache))
    assert code == 2
    assert_one_error_line(err, "no processed dataset", "trainer synthesize")


@pytest.mark.slow
@pytest.mark.parametrize("script", ["synthesize", "train", "evaluate", "export"])
def test_scripts_are_thin_wrappers_with_the_same_exit_codes(script, tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / f"{script}.py"), "--config", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    assert_one_error_line(result.stderr, f"{tmp_path / 'missing.yaml'}: config file not found")


@pytest.mark.parametrize(("raised", "code"), [(TrainerError, 2), (RuntimeError, 1)])
def test_errors_and_tracebacks_never_print_a_secret(capsys, monkeypatch, raised, code):
    import trainer.cli

    monkeypatch.setenv("HF_TOKEN", "hf_planted_secret_value")

    def leaky(config, run_uri=None):
        raise raised("cannot reach https://bot:pass123@example.com/repo with token hf_planted_secret_value")

    monkeypatch.setattr(trainer.cli, "_synthesize", leaky)
    exit_code, err = run(capsys, "synthesize", "--config", DEBUG_CONFIG)
    assert exit_code == code
    assert "hf_planted_secret_value" not in err and "pass123" not in err
    assert "cannot reach https://***@example.com/repo with token ***" in err
    assert ("Traceback" in err) == (raised is RuntimeError)  # a bug keeps its (masked) traceback
