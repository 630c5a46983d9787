"""What tests share besides fixtures: the repository's paths, override builders, the command runners and the local
S3 server. Fixtures live in conftest.py."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
SAMPLE_EXAMPLES = REPO / "data" / "raw" / "examples"
DEBUG_CONFIG = REPO / "configs" / "training" / "debug.yaml"
# default.yaml with only sizes changed (tests/test_parity.py holds the list): the production path on a CPU.
PRODUCTION_TINY = REPO / "configs" / "training" / "production-tiny.yaml"
CHI = Path("/usr/share/gocode/src/github.com/go-chi/chi")  # the debug config's Go source (Debian package)
RELIABILITY_DOC = REPO / "docs" / "reliability.md"


def reliability_tests() -> list[str]:
    """The node ids (`tests/test_x.py::test_y`) of the tests docs/reliability.md names, in its order."""
    return re.findall(r"`(tests/test_\w+\.py::test_\w+)`", RELIABILITY_DOC.read_text(encoding="utf-8"))


def logged_losses(logging_dir: Path) -> list[tuple[int, float]]:
    """(step, loss) of every training line in a run's metrics.jsonl."""
    from trainer.metrics_log import METRICS_FILE, read_metrics

    return [(r["step"], r["loss"]) for r in read_metrics(logging_dir / METRICS_FILE) if "loss" in r]


def set_args(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """`--set` arguments for each `dotted.key=value` override."""
    return [arg for item in overrides for arg in ("--set", item)]


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


@contextmanager
def background(args: list[str], **popen: Any) -> Iterator[subprocess.Popen]:
    """`args` started in a process session of its own. When the block ends, however it ends (a failed assert, a
    timeout), every process of that session still running, children included, is killed, reaped, its pipes closed."""
    process = subprocess.Popen(args, start_new_session=True, **popen)
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):  # the session is already empty
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe:
                pipe.close()


def run_to_end(args: list[str], timeout: float, **popen: Any) -> subprocess.CompletedProcess:
    """subprocess.run(args, capture_output=True, text=True, timeout=timeout), except that a timeout also kills the
    processes `args` started (see background)."""
    with background(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen) as process:
        stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def train_command(
    config, *extra: str, kill_at: str = "", config_file: Path = DEBUG_CONFIG
) -> tuple[list[str], dict[str, str]]:
    """The arguments and environment of `trainer train --config config_file` in a fresh process on `config`'s
    folders, as a restarted job runs it: `extra` are further `--set` overrides, `kill_at` a failpoint
    (trainer/failpoints.py)."""
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
    args = [sys.executable, "-m", "trainer.cli", "train", "--config", str(config_file), *set_args(sets)]
    return args, {**os.environ, "TRAINER_KILL_AT": kill_at}


def train_process(
    config, *extra: str, kill_at: str = "", config_file: Path = DEBUG_CONFIG
) -> subprocess.CompletedProcess:
    """`trainer train` (see train_command) run to its end, or killed after 300 s."""
    args, env = train_command(config, *extra, kill_at=kill_at, config_file=config_file)
    return run_to_end(args, timeout=300, env=env)


@contextmanager
def training_in_background(config, *extra: str) -> Iterator[subprocess.Popen]:
    """`trainer train` (see train_command) running while the block runs; killed at its end if still running."""
    args, env = train_command(config, *extra)
    with background(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        yield process


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_server(url: str, process: subprocess.Popen, log: IO[str], timeout: float = 120) -> None:
    """Until GET `url` answers 200; an error with the end of `log` (the process's output) if `process` exits first
    or `timeout` passes."""

    def failed(why: str) -> RuntimeError:
        log.seek(0)
        return RuntimeError(f"{process.args} {why}: {log.read()[-3000:]}")

    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as response:
            if response.status == 200:
                return
        if process.poll() is not None:
            raise failed(f"exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise failed(f"not up after {timeout} s")
        time.sleep(0.2)


@contextmanager
def openai_server(model_dir: Path, timeout: float = 120) -> Iterator[str]:
    """A real OpenAI-compatible server, `transformers serve`, on the model folder `model_dir` (offline, on the CPU,
    the weights' own dtype), while the block runs; yields its base URL (`http://127.0.0.1:PORT/v1`). Requests name
    the model as `str(model_dir)`: the server is pinned to it and refuses another name."""
    port = free_port()
    args = [str(Path(sys.executable).parent / "transformers"), "serve", str(model_dir), "--host", "127.0.0.1"]
    args += ["--port", str(port), "--device", "cpu", "--dtype", "auto", "--log-level", "warning"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with tempfile.TemporaryFile("w+") as log, background(args, stdout=log, stderr=subprocess.STDOUT, env=env) as server:
        wait_for_server(f"http://127.0.0.1:{port}/health", server, log, timeout)
        yield f"http://127.0.0.1:{port}/v1"


class S3Server:
    """A real S3-compatible server (moto's server mode) on 127.0.0.1; stop() and start() keep its data."""

    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.port = free_port()
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
