"""Shared fixtures: offline environment, the tiny model built once per session (and its tokenizer), and one trained
run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import (
    CHI,
    DEBUG_CONFIG,
    SAMPLE_EXAMPLES,
    USAGE_ON,
    S3Server,
    debug_overrides,
    reliability_tests,
    set_args,
)

os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled")
os.environ.pop("WANDB_API_KEY", None)

RELIABILITY_TESTS = set(reliability_tests())
SKIPPED_RELIABILITY_TESTS: list[str] = []  # "node id: reason", filled as the run goes


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """docs/reliability.md reads a row as tested: a skipped test behind it must not pass for one."""
    if report.skipped and not hasattr(report, "wasxfail") and report.nodeid.split("[")[0] in RELIABILITY_TESTS:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        SKIPPED_RELIABILITY_TESTS.append(f"{report.nodeid}: {reason}")


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects anything
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test on the session pipeline run must be marked slow, or `make test-fast` runs the whole pipeline for it."""
    unmarked = [
        item.nodeid
        for item in items
        if "pipeline_run" in getattr(item, "fixturenames", ()) and item.get_closest_marker("slow") is None
    ]
    if unmarked:
        raise pytest.UsageError(f"these use the pipeline_run fixture: mark them @pytest.mark.slow: {unmarked}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    if SKIPPED_RELIABILITY_TESTS and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    if SKIPPED_RELIABILITY_TESTS:
        terminalreporter.section("skipped, but docs/reliability.md counts them as run: the run fails", red=True)
        for line in SKIPPED_RELIABILITY_TESTS:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def tiny_model_dir(model_cache) -> Path:
    """The tiny model's folder (the default spec), for a server to load: `transformers serve` in tests."""
    from trainer.config import TinyModelSpec
    from trainer.tiny_model import build_tiny_model

    return build_tiny_model(TinyModelSpec(), model_cache)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    """The tiny Qwen 2.5 tokenizer: ChatML's special tokens, so every ChatML template renders on it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture
def make_config(tmp_path, model_cache):
    from trainer.config_file import load_config

    def make(*overrides: str, examples: Path = SAMPLE_EXAMPLES, config_file: Path = DEBUG_CONFIG):
        # Unit tests train on the examples they name alone; the pipeline test keeps the config's Go source (chi).
        return load_config(
            config_file, [*debug_overrides(tmp_path, model_cache, examples), "data.sources=[]", *overrides]
        )

    return make


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, model_cache):
    """The debug pipeline (QLoRA on the tiny model) run once through the CLI, shared by tests that read its outputs."""
    from trainer.cli import main
    from trainer.config_file import load_config

    root = tmp_path_factory.mktemp("pipeline")
    overrides = [*debug_overrides(root, model_cache), USAGE_ON, "training.max_steps=20", "training.save_steps=10"]
    overrides.append("evaluation.baseline=true")
    if not CHI.is_dir():  # without Debian's chi package (`make go-sources`), the sample examples alone
        overrides.append("data.sources=[]")
    assert main(["pipeline", "--config", str(DEBUG_CONFIG), *set_args(overrides)]) == 0
    return load_config(DEBUG_CONFIG, overrides)


@pytest.fixture
def examples_dir(tmp_path) -> Path:
    """An empty examples folder for tests that write their own JSONL."""
    path = tmp_path / "examples"
    path.mkdir()
    return path


@pytest.fixture
def sample_copy(tmp_path) -> Path:
    path = tmp_path / "sample"
    shutil.copytree(SAMPLE_EXAMPLES, path)
    return path


@pytest.fixture(scope="session")
def s3_server():
    """boto3 in this process and in subprocesses reaches the server through AWS_* variables."""
    server = S3Server()
    server.start()
    names = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_MAX_ATTEMPTS")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(
        AWS_ENDPOINT_URL=server.url,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_MAX_ATTEMPTS="2",
    )
    yield server
    server.start()  # a test may leave it stopped
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def bucket(s3_server, request) -> str:
    import boto3

    name = "test-" + request.node.name.lower().replace("_", "-")[:40]
    boto3.client("s3").create_bucket(Bucket=name)
    return name
