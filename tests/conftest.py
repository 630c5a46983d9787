"""Shared fixtures: offline environment, the tiny model built once per session, and one trained run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_EXAMPLES = REPO / "data" / "raw" / "examples"
DEBUG_CONFIG = REPO / "configs" / "training" / "debug.yaml"
CHI = Path("/usr/share/gocode/src/github.com/go-chi/chi")  # the debug config's Go source (Debian package)

os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled")
os.environ.pop("WANDB_API_KEY", None)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


def debug_overrides(root: Path, model_cache: Path, examples: Path = SAMPLE_EXAMPLES) -> list[str]:
    """`--set` values that point every input and output of the debug config into `root`."""
    return [
        f"model.cache_dir={model_cache}",
        f"data.examples_dir={examples}",
        f"data.output_dir={root / 'processed'}",
        f"data.cache_dir={root / 'cache'}",
        f"training.output_dir={root / 'checkpoints'}",
        f"training.logging_dir={root / 'logs'}",
        f"evaluation.output_dir={root / 'eval'}",
        f"export.output_dir={root / 'models'}",
    ]


def train_process(config, *extra: str, kill_at: str = "", wait: bool = True):
    """`trainer train` in a fresh process on `config`'s folders, as a restarted job runs it: `extra` are further
    `--set` overrides, `kill_at` a failpoint (trainer/training/failpoints.py). `wait=False` returns the Popen."""
    t = config.training
    sets = [
        f"model.cache_dir={config.model.cache_dir}",
        f"data.output_dir={config.data.output_dir}",
        f"training.output_dir={t.output_dir}",
        f"training.logging_dir={t.logging_dir}",
        f"training.save_steps={t.save_steps}",
        "training.logging_steps=1",
        *extra,
    ]
    args = [sys.executable, "-m", "trainer.cli", "train", "--config", str(DEBUG_CONFIG)]
    args += [arg for item in sets for arg in ("--set", item)]
    env = {**os.environ, "TRAINER_KILL_AT": kill_at}
    if not wait:
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def make_config(tmp_path, model_cache):
    from trainer.config import load_config

    def make(*overrides: str, examples: Path = SAMPLE_EXAMPLES):
        # Unit tests train on the examples they name alone; the pipeline test keeps the config's Go source (chi).
        return load_config(
            DEBUG_CONFIG, [*debug_overrides(tmp_path, model_cache, examples), "data.sources=[]", *overrides]
        )

    return make


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory, model_cache):
    """The debug pipeline (QLoRA on the tiny model) run once through the CLI, shared by tests that read its outputs."""
    from trainer.cli import main
    from trainer.config import load_config

    root = tmp_path_factory.mktemp("pipeline")
    overrides = [*debug_overrides(root, model_cache), "training.max_steps=20", "training.save_steps=10"]
    overrides.append("evaluation.baseline=true")
    if not CHI.is_dir():  # without Debian's chi package (`make go-sources`), the sample examples alone
        overrides.append("data.sources=[]")
    args = ["pipeline", "--config", str(DEBUG_CONFIG)]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 0
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


class S3Server:
    """A real S3-compatible server (moto's server mode) on 127.0.0.1; stop() and start() keep its data."""

    def __init__(self):
        import socket

        from moto.server import ThreadedMotoServer

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.running = False

    def start(self):
        from moto.server import ThreadedMotoServer

        if not self.running:
            self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            self.server.start()
            self.running = True

    def stop(self):
        if self.running:
            self.server.stop()
            self.running = False


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
