"""What tests share besides fixtures: the repository's paths, override builders, the command runners and the local
S3 server. Fixtures live in conftest.py."""

from __future__ import annotations

import contextlib
import json
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
SKY_PYTHON = REPO / ".venv-sky" / "bin" / "python"  # SkyPilot 0.14.1, in a venv of its own (it pins older click)


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
        # The usage conversations' compile check builds net/http and chi in a fresh cache_dir (10-40 s a run): the
        # tests that read usage ask for it (USAGE_ON: the session's pipeline run, the demo data's split test).
        "data.generation.usage_candidates=0",
    ]


USAGE_ON = "data.generation.usage_candidates=4"  # the shipped default, after debug_overrides turned it off

# The conversations the assistant-mask tests tokenize: two plain assistant turns after a system prompt, and a tool call.
CHAT = [
    {"role": "system", "content": "You know chi."},
    {"role": "user", "content": "What does NewRouter return?"},
    {"role": "assistant", "content": "A *chi.Mux."},
    {"role": "user", "content": "And Use?"},
    {"role": "assistant", "content": "It adds middleware."},
]
TOOL_CHAT = [
    {"role": "user", "content": "What does NewRouter return?"},
    {"role": "assistant", "content": "", "tool_calls": [{"name": "lookup_symbol", "arguments": {"name": "NewRouter"}}]},
    {"role": "tool", "content": "func NewRouter() *Mux"},
    {"role": "assistant", "content": "It returns a *chi.Mux."},
]
TOOLS = [{"type": "function", "function": {"name": "lookup_symbol", "parameters": {"type": "object"}}}]


def assert_supervises_exactly(
    tokenizer: Any, text: str, ids: list[int], labels: list[int], spans: list[tuple[int, int]]
) -> None:
    """`ids` are `text` tokenized, and the tokens labelled (each with itself) are exactly those inside `spans`, the
    character ranges found in `text` independently of how the mask was derived."""
    from trainer.tokenize import IGNORE_INDEX

    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert offsets["input_ids"] == ids
    expected = [any(a <= s and e <= b for a, b in spans) for s, e in offsets["offset_mapping"]]
    assert [label != IGNORE_INDEX for label in labels] == expected
    assert all(label == token for label, token in zip(labels, ids, strict=True) if label != IGNORE_INDEX)


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
    config, *extra: str, kill_at: str = "", config_file: Path = DEBUG_CONFIG, run_uri: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """The arguments and environment of `trainer train --config config_file` in a fresh process on `config`'s
    folders, as a restarted job runs it: `extra` are further `--set` overrides, `kill_at` a failpoint
    (trainer/failpoints.py), `run_uri` the run's `--run-uri`."""
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
    args += ["--run-uri", run_uri] if run_uri else []
    return args, {**os.environ, "TRAINER_KILL_AT": kill_at}


def train_process(
    config, *extra: str, kill_at: str = "", config_file: Path = DEBUG_CONFIG, run_uri: str | None = None
) -> subprocess.CompletedProcess:
    """`trainer train` (see train_command) run to its end, or killed after 300 s."""
    args, env = train_command(config, *extra, kill_at=kill_at, config_file=config_file, run_uri=run_uri)
    return run_to_end(args, timeout=300, env=env)


@contextmanager
def training_in_background(
    config, *extra: str, run_uri: str | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen]:
    """`trainer train` (see train_command) running in `cwd` while the block runs; killed at its end if still
    running."""
    args, env = train_command(config, *extra, run_uri=run_uri)
    with background(args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        yield process


def logged_steps(metrics_log: Path) -> list[int]:
    """The steps of a metrics log's training records (those with a loss), in order."""
    if not metrics_log.is_file():
        return []
    records = [json.loads(line) for line in metrics_log.read_text().splitlines() if line.strip()]
    return [record["step"] for record in records if "loss" in record]


def wait_for_step(metrics_log: Path, step: int, process: subprocess.Popen, timeout: float = 300) -> None:
    """Until the training writing `metrics_log` has logged `step`; an error if it exits or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while not any(logged >= step for logged in logged_steps(metrics_log)):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{metrics_log}: step {step} not logged (exit code {process.poll()})")
        time.sleep(0.05)


# SkyPilot's node agent running a task's preemption hooks as on a cloud's notice (sky/skylet/hook_executor.py),
# with the hooks as SkyPilot's loader reads them from the task YAML. It loads first, then runs on a line on stdin.
RUN_PREEMPTION_HOOKS = """
import json, sys
from sky.skylet import hook_executor
from sky.utils import dag_utils
task = next(t for t in dag_utils.load_chain_dag_from_yaml(sys.argv[1]).tasks if t.name == sys.argv[2])
(hooks,) = {json.dumps(r.hooks) for r in task.resources}
print("timeouts", [hook["timeout"] for hook in json.loads(hooks)], flush=True)
sys.stdin.readline()
hook_executor.run("preemption", json.loads(hooks))
"""


class PreemptionHook:
    """A node agent, loaded and waiting (see RUN_PREEMPTION_HOOKS): `fire()` runs the hooks, `finish()` returns the
    agent's log, `timeout` the hooks' timeout in seconds."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.timeout = int(process.stdout.readline().split("[")[1].split("]")[0])  # one hook

    def fire(self) -> None:
        self.fired = time.monotonic()
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def finish(self) -> str:
        log = self.process.communicate(timeout=self.timeout + 60)[0]
        self.seconds = time.monotonic() - self.fired
        return log


@contextmanager
def preemption_hook(task_yaml: Path, task: str, env: dict[str, str], home: Path) -> Iterator[PreemptionHook]:
    """The preemption hooks of `task` in `task_yaml`, ready to run in `env` (HOME=`home`: the agent logs there)."""
    args = [str(SKY_PYTHON), "-c", RUN_PREEMPTION_HOOKS, str(task_yaml), task]
    full = {**os.environ, **env, "HOME": str(home)}
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    with background(args, env=full, **pipes) as process:
        yield PreemptionHook(process)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def log_tail(log: IO[str]) -> str:
    """The end of what a background process wrote to `log`: why it failed or answered as it did."""
    log.seek(0)
    return log.read()[-3000:]


def wait_for_server(url: str, process: subprocess.Popen, log: IO[str], timeout: float = 120) -> None:
    """Until GET `url` answers 200; an error with the end of `log` (the process's output) if `process` exits first
    or `timeout` passes."""

    def failed(why: str) -> RuntimeError:
        return RuntimeError(f"{process.args} {why}: {log_tail(log)}")

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
