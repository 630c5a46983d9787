"""`make gpu-check`'s script at tiny scale on the CPU: the same stages a GPU run goes through, so it cannot rot
before one runs it; and the wheels a GPU machine without a registry is given (benchmarks/gpu_wheels.py)."""

import re
import subprocess
import sys
import zipfile

import pytest

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from gpu_wheels import BUILT, CARRIED, locked, slim


def test_every_carried_wheel_is_pinned_by_the_lock():
    pins = locked((*CARRIED, *BUILT))
    assert len(pins) == len(CARRIED) + len(BUILT) and all(re.fullmatch(r"[\w.-]+==[\w.]+", pin) for pin in pins)
    assert "huggingface_hub==" in " ".join(pins) and "rouge_score==" in " ".join(pins)  # spelled as the lock does


def test_a_slimmed_wheel_keeps_the_cuda_13_libraries_and_its_record_says_so(tmp_path):
    wheel = tmp_path / "bitsandbytes-0.50.2-py3-none-manylinux_2_24_x86_64.whl"
    libraries = [f"bitsandbytes/libbitsandbytes_{build}.so" for build in ("cpu", "cuda126", "cuda130", "rocm72")]
    files = ["bitsandbytes/__init__.py", *libraries]
    record = "".join(f"{name},sha256=x,1\n" for name in files) + "bitsandbytes-0.50.2.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as out:
        for name in files:
            out.writestr(name, b"code")
        out.writestr("bitsandbytes-0.50.2.dist-info/RECORD", record)
    slim(wheel)
    with zipfile.ZipFile(wheel) as slimmed:
        kept = [
            "bitsandbytes/__init__.py",
            "bitsandbytes/libbitsandbytes_cpu.so",
            "bitsandbytes/libbitsandbytes_cuda130.so",
        ]
        assert slimmed.namelist() == [*kept, "bitsandbytes-0.50.2.dist-info/RECORD"]
        listed = [line.split(",")[0] for line in slimmed.read("bitsandbytes-0.50.2.dist-info/RECORD").decode().split()]
        assert listed == [*kept, "bitsandbytes-0.50.2.dist-info/RECORD"]


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
