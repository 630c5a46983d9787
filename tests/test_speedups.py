"""Optional speed features (trainer/speedups.py): off where they cannot run, refused when forced there,
and where they run, the same training as without them."""

import importlib.util

import pytest
import torch

from trainer.errors import TrainerError
from trainer.speedups import attention_implementation, use_liger
from trainer.synthesis.synthesize import synthesize
from trainer.training.train import build_trainer

CUDA = torch.cuda.is_available()


def _adapter_after(config) -> dict[str, torch.Tensor]:
    synthesize(config)
    trainer, _ = build_trainer(config)
    trainer.train()
    return {n: p.detach().float().cpu().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def _assert_same_training(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tolerance: float) -> None:
    assert a.keys() == b.keys() and a
    worst = max((a[n] - b[n]).abs().max().item() for n in a)
    moved = max(a[n].abs().max().item() for n in a if "lora_B" in n)  # lora_B starts at 0: it learned something
    assert worst <= tolerance and moved > 10 * tolerance, (worst, moved)


@pytest.mark.skipif(CUDA, reason="checks the behaviour on a machine without CUDA")
def test_cuda_kernels_are_off_here_and_refused_when_forced(make_config, capsys):
    config = make_config()
    assert attention_implementation(config.model) == "sdpa"  # auto
    assert use_liger(config.training) is False  # auto
    flash = make_config("model.attn_implementation=flash_attention_2")
    with pytest.raises(TrainerError, match=r"model\.attn_implementation=flash_attention_2: needs a CUDA GPU"):
        attention_implementation(flash.model)
    # Evaluation and export of a run trained with flash-attention fall back to SDPA, saying so.
    assert attention_implementation(flash.model, strict=False) == "sdpa"
    assert "loading with sdpa" in capsys.readouterr().out
    with pytest.raises(TrainerError, match=r"training\.liger_kernel=true: needs a CUDA GPU"):
        use_liger(make_config("training.liger_kernel=true").training)
    synthesize(flash)
    with pytest.raises(TrainerError, match=r"model\.attn_implementation=flash_attention_2"):
        build_trainer(flash)  # refused before the model is loaded
    trainer, _ = build_trainer(config)
    assert (trainer.args.packing, trainer.args.use_liger_kernel, trainer.args.torch_compile) == (False, False, False)


def test_a_package_that_is_installed_but_cannot_load_is_gone_without(make_config, tmp_path, monkeypatch):
    """A flash-attn built for another torch or CUDA imports with an error: `auto` falls back instead of failing at
    model load; forcing it names the reason."""
    broken = tmp_path / "flash_attn"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('undefined symbol: _ZN3c104cuda9SetDevice')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = make_config()
    assert attention_implementation(config.model) == "sdpa"
    forced = make_config("model.attn_implementation=flash_attention_2")
    with pytest.raises(TrainerError, match=r"flash_attn package is installed but cannot be loaded \(undefined symbol"):
        attention_implementation(forced.model)


@pytest.mark.slow
def test_torch_compile_trains_the_same_adapter(make_config):
    steps = ("training.max_steps=3", "training.save_steps=3", "model.quantization=null")
    eager = _adapter_after(make_config(*steps))
    torch._dynamo.reset()
    compiled = _adapter_after(make_config(*steps, "training.torch_compile=true", "training.resume=never"))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # it did compile
    _assert_same_training(eager, compiled, 1e-4)


@pytest.mark.slow
@pytest.mark.skipif(not (CUDA and importlib.util.find_spec("flash_attn")), reason="needs CUDA and flash-attn")
def test_flash_attention_packs_and_trains_like_sdpa(make_config):
    steps = ("training.max_steps=3", "training.save_steps=3", "training.precision=bf16")
    flash = make_config(*steps, "model.attn_implementation=auto")
    synthesize(flash)
    assert build_trainer(flash)[0].args.packing is True
    sdpa = _adapter_after(make_config(*steps, "model.attn_implementation=sdpa", "training.packing=true"))
    _assert_same_training(_adapter_after(flash), sdpa, 2e-2)


@pytest.mark.slow
@pytest.mark.skipif(not (CUDA and importlib.util.find_spec("liger_kernel")), reason="needs CUDA and liger-kernel")
def test_liger_kernels_train_like_without(make_config):
    steps = ("training.max_steps=3", "training.save_steps=3", "training.precision=bf16")
    plain = _adapter_after(make_config(*steps, "training.liger_kernel=false"))
    liger = _adapter_after(make_config(*steps, "training.liger_kernel=true", "training.resume=never"))
    _assert_same_training(plain, liger, 2e-2)
