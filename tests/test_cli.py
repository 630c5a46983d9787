"""Bad input at the command line: exit code 2, one `error:` line, no traceback."""

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
    assert_one_error_line(err, str(config), "training.save_step", "Extra inputs are not permitted")


def test_missing_checkpoint(capsys, tmp_path, model_cache):
    args = sets(tmp_path, model_cache)
    code, err = run(capsys, "evaluate", "--config", DEBUG_CONFIG, *args, "--checkpoint", tmp_path / "checkpoint-9")
    assert code == 2
    assert_one_error_line(err, f"{tmp_path / 'checkpoint-9'}: checkpoint not found")
    code, err = run(capsys, "export", "--config", DEBUG_CONFIG, *args)
    assert code == 2
    assert_one_error_line(err, "no checkpoint found", "trainer train")


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
