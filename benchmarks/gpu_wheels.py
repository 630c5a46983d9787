"""Wheels for a GPU machine with no package registry (docs/gpu.md): requirements.lock's versions of what `make
gpu-check` imports and the machine's image lacks (or holds at another version), for its Python 3.12 on x86-64, in
.whl/ (ignored by git). What the image has is used as it is: torch (its CUDA build), accelerate, safetensors,
pyarrow, numpy, pandas, rich, pyyaml, sacrebleu and the rest of the list in docs/gpu.md. boto3 and openai are left
out: trainer imports them only for S3 and an endpoint or teacher, which gpu-check does not use.

A device call carries at most 64 MiB: bitsandbytes' wheel (43 MB) holds a library for every CUDA, ROCm and XPU
version, and only the CUDA 13 ones are kept (7 MB), so everything fits in about 38 MB.

Usage: python benchmarks/gpu_wheels.py [--out .whl]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARRIED = (
    "transformers", "trl", "peft", "bitsandbytes", "datasets", "huggingface_hub", "tokenizers", "gguf", "pydantic",
    "pydantic_core", "annotated-types", "typing-inspection", "typing_extensions", "typer", "annotated-doc", "click",
    "tree-sitter", "tree-sitter-go", "nltk", "dill", "multiprocess", "fsspec", "hf-xet", "httpx2", "httpcore2",
    "truststore",
)  # fmt: skip
BUILT = ("rouge_score",)  # published as source only: built here into a (pure Python) wheel
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35, 39)] + ["manylinux2014_x86_64", "any"]
KEPT_LIBRARIES = re.compile(r"_(cpu|cuda13\d)\.so$")  # bitsandbytes' libraries for the GPU machines' CUDA 13


def _key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # how pip compares names: `-`, `_` and `.` alike, any case


def locked(names: tuple[str, ...]) -> list[str]:
    """`name==version` from requirements.lock for each name."""
    pins = {_key(line.split("==")[0]): line.strip() for line in (ROOT / "requirements.lock").open() if "==" in line}
    return [pins[_key(name)] for name in names]


def _kept(name: str) -> bool:
    return not name.endswith(".so") or KEPT_LIBRARIES.search(name) is not None


def slim(wheel: Path) -> None:
    """Rewrite a wheel without the native libraries KEPT_LIBRARIES does not match (RECORD too)."""
    slimmed = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slimmed, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            if not _kept(item.filename):
                continue
            data = source.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = "".join(f"{line}\n" for line in lines if _kept(line.split(",")[0])).encode()
            target.writestr(item, data)
    slimmed.replace(wheel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".whl")
    out = parser.parse_args().out
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    target = ["--python-version", "3.12", "--implementation", "cp", *(f"--platform={p}" for p in PLATFORMS)]
    subprocess.run(
        [*pip, "download", "-q", "--no-deps", "--only-binary=:all:", *target, "-d", out, *locked(CARRIED)], check=True
    )
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", out, *locked(BUILT)], check=True)
    for wheel in out.glob("bitsandbytes-*.whl"):
        slim(wheel)
    total = sum(path.stat().st_size for path in out.glob("*.whl"))
    print(f"{len(list(out.glob('*.whl')))} wheels in {out}: {total / 2**20:.1f} MiB of a device call's 64")


if __name__ == "__main__":
    main()
