from pathlib import Path

import pytest

from trainer.config import load_config
from trainer.errors import TrainerError

REPO = Path(__file__).resolve().parent.parent


def test_default_config_is_qwen_7b_qlora():
    config = load_config(REPO / "configs/training/default.yaml")
    assert config.model.name_or_path == "Qwen/Qwen2.5-7B-Instruct"
    assert config.model.tiny is None
    assert (config.model.lora.r, config.model.lora.target_modules) == (64, "all-linear")
    q = config.model.quantization
    assert (q.quant_type, q.double_quant, q.compute_dtype) == ("nf4", True, "bfloat16")
    assert config.data.examples_dir == Path("data/raw/examples")
    assert config.data.output_dir == Path("data/processed")
    assert config.training.output_dir == Path("outputs/checkpoints")
    assert config.training.resume == "auto"


def test_debug_config_uses_the_tiny_model_with_qlora():
    config = load_config(REPO / "configs/training/debug.yaml")
    assert config.model.tiny is not None
    assert config.model.quantization is not None
    assert 0 < config.training.max_steps <= 200


def test_overrides_are_parsed_as_yaml_and_can_remove_a_section():
    config = load_config(
        REPO / "configs/training/debug.yaml",
        ["training.max_steps=7", "model.quantization=null", "model.lora.target_modules=[q_proj, v_proj]"],
    )
    assert config.training.max_steps == 7
    assert config.model.quantization is None
    assert config.model.lora.target_modules == ["q_proj", "v_proj"]


def test_unknown_key_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("training:\n  max_step: 5\n")
    with pytest.raises(TrainerError) as err:
        load_config(path)
    assert str(err.value) == f"invalid config: {path}: training.max_step: Extra inputs are not permitted"


def test_unknown_key_in_an_included_file_names_that_file(tmp_path):
    (tmp_path / "model.yaml").write_text("name_or_path: x\nlora:\n  rank: 8\n")
    (tmp_path / "run.yaml").write_text("model: model.yaml\n")
    with pytest.raises(TrainerError, match=r"model\.yaml: model\.lora\.rank: Extra inputs"):
        load_config(tmp_path / "run.yaml")


def test_wrong_type_from_set_names_the_override():
    with pytest.raises(TrainerError, match=r"--set training\.max_steps=many: training\.max_steps: Input should be"):
        load_config(REPO / "configs/training/debug.yaml", ["training.max_steps=many"])


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("training:\n  max_steps: 5\n  bad: [1, 2\n")
    with pytest.raises(TrainerError, match=rf"{path}:\d+: invalid YAML"):
        load_config(path)


def test_malformed_override_and_missing_file_are_errors(tmp_path):
    with pytest.raises(TrainerError, match=r"expected dotted\.key=value"):
        load_config(REPO / "configs/training/debug.yaml", ["training.max_steps"])
    with pytest.raises(TrainerError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_tiny_shapes_must_fit_the_4bit_cpu_kernel():
    with pytest.raises(TrainerError, match="intermediate_size=100"):
        load_config(REPO / "configs/training/debug.yaml", ["model.tiny.intermediate_size=100"])
