"""Trust: files from a shared bucket or a downloaded model run no code unless the config says so."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import train_process
from trainer.checkpoints.folder import write_manifest
from trainer.errors import TrainerError
from trainer.model import base_model_path, load_base_model, load_peft_model
from trainer.synthesis.synthesize import synthesize
from trainer.training.train import train


class Payload:
    """Unpickling this runs `touch marker`: what a tampered checkpoint file would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_a_checkpoint_pickle_that_would_run_code_is_refused(make_config, tmp_path):
    config = make_config("training.max_steps=2", "training.save_steps=2")
    synthesize(config)
    checkpoint = train(config).final_checkpoint
    marker = tmp_path / "pwned"
    torch.save({"python": Payload(marker), "numpy": None, "cpu": torch.get_rng_state()}, checkpoint / "rng_state.pth")
    write_manifest(checkpoint)  # whoever can write to the bucket can reseal it

    done = train_process(config, "training.max_steps=4")
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {checkpoint}: refused to unpickle")
    assert not marker.exists()


def pickled_copy(folder, target, weights, pickled):
    """`folder` copied to `target` with its `weights` safetensors file replaced by the pickled file `pickled`."""
    shutil.copytree(folder, target)
    tensors = load_file(target / weights)
    (target / weights).unlink()
    torch.save(tensors, target / pickled)
    return target


@pytest.mark.slow
def test_pickled_weights_are_refused_unless_the_config_allows_them(make_config, pipeline_run, tmp_path):
    config = make_config()
    folder = pickled_copy(base_model_path(config.model), tmp_path / "base", "model.safetensors", "pytorch_model.bin")
    model = config.model.model_copy(update={"name_or_path": str(folder), "tiny": None, "quantization": None})
    with pytest.raises(TrainerError, match=r"only pickled weights \(pytorch_model.bin\), no safetensors; refused"):
        load_base_model(model, torch.float32, quantized=False)
    allowed = model.model_copy(update={"allow_pickle_weights": True})
    base = load_base_model(allowed, torch.float32, quantized=False)
    reference = load_base_model(config.model.model_copy(update={"quantization": None}), torch.float32, False)
    assert all(
        torch.equal(a, b) for a, b in zip(base.state_dict().values(), reference.state_dict().values(), strict=True)
    )

    checkpoint = pipeline_run.training.output_dir / "checkpoint-20"
    adapter = pickled_copy(checkpoint, tmp_path / "adapter", "adapter_model.safetensors", "adapter_model.bin")
    with pytest.raises(TrainerError, match=r"only pickled weights \(adapter_model.bin\)"):
        load_peft_model(base, adapter, model)
    tuned = load_peft_model(base, adapter, allowed)
    expected = load_file(checkpoint / "adapter_model.safetensors")
    loaded = {k.replace(".default", ""): v for k, v in tuned.state_dict().items() if "lora_" in k}
    assert loaded.keys() == expected.keys() and len(expected) > 0
    assert all(torch.equal(loaded[key], tensor) for key, tensor in expected.items())


@pytest.mark.slow
def test_code_shipped_with_a_model_runs_only_with_trust_remote_code(make_config, tmp_path):
    config = make_config()
    folder = tmp_path / "model"
    shutil.copytree(base_model_path(config.model), folder)
    marker = tmp_path / "remote-code-ran"
    (folder / "configuration_evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
        "from transformers import Qwen2Config\n\nclass EvilConfig(Qwen2Config):\n    pass\n"
    )
    settings = json.loads((folder / "config.json").read_text())
    settings["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(settings))
    model = config.model.model_copy(update={"name_or_path": str(folder), "tiny": None, "quantization": None})

    load_base_model(model, torch.float32, quantized=False)
    assert not marker.exists()
    with pytest.raises(Exception):  # noqa: B017 - whatever the remote code does next; that it ran is the point
        load_base_model(model.model_copy(update={"trust_remote_code": True}), torch.float32, quantized=False)
    assert marker.exists()  # the control: the same folder does run its code once the config allows it
