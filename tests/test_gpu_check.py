"""`make gpu-check`'s script at tiny scale on the CPU: the same stages a GPU run goes through, so it cannot rot
before one runs it."""

import re
import subprocess
import sys

import pytest

from tests.helpers import REPO


@pytest.mark.slow
def test_gpu_check_runs_every_stage_and_the_resume_is_exact(tmp_path):
    report = tmp_path / "gpu.md"
    args = [sys.executable, str(REPO / "benchmarks/gpu_check.py"), "--scale", "tiny", "--work", str(tmp_path / "w")]
    done = subprocess.run([*args, "--report", str(report)], capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    text = report.read_text()
    stages = re.findall(r"^\| ([a-zA-Z +()]+) \| [\d.]+ \|$", text, re.MULTILINE)
    assert stages == [
        "synthesize", "train (uninterrupted)", "train until SIGKILL", "train resumed", "evaluate (transformers)",
        "export + verification",
    ]  # fmt: skip
    gap = float(re.search(r"uninterrupted run ([\d.e+-]+) of the largest value", text).group(1))
    assert gap <= 1e-5
    assert re.search(r"- Training: 4 steps in [\d.]+ s; \d+ tokens/s, of which \d+ supervised", text)
    assert (tmp_path / "w/killed/models/production-tiny/SHA256SUMS").is_file()
