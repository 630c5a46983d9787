import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from tests.helpers import DEBUG_CONFIG
from trainer.config import Config
from trainer.config_file import load_config
from trainer.errors import TrainerError

REPO = Path(__file__).resolve().parent.parent


def test_default_config_is_qwen_7b_qlora():
    config = load_config(REPO / "configs/training/default.yaml")
    assert config.model.name_or_path == "Qwen/Qwen2.5-7B-Instruct"
    assert config.model.tiny is None
    assert (config.model.lora.r, config.model.lora.target_modules) == (64, "all-linear")
    q = config.model.quantization
    assert (q.quant_type, q.double_quant, q.compute_dtype) == ("nf4", True, "bf16")
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
    assert str(err.value) == f"invalid config: {path}: training.max_step: unknown key (did you mean 'max_steps'?)"


def test_unknown_key_in_an_included_file_names_that_file(tmp_path):
    (tmp_path / "model.yaml").write_text("name_or_path: x\nlora:\n  rank: 8\n")
    (tmp_path / "run.yaml").write_text("model: model.yaml\n")
    with pytest.raises(TrainerError, match=r"model\.yaml: model\.lora\.rank: unknown key"):
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


def _field_model(annotation) -> type[BaseModel] | None:
    """The config section a field holds (also inside `X | None`), or None for a leaf value."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def readme_table_keys(readme: str) -> list[str]:
    table = readme.split("The keys you will touch most:")[1].split("\n\n")[1]
    keys = []
    for row in table.splitlines()[2:]:
        names = re.findall(r"`([a-z_.]+)`", row.split("|")[1])
        parent = names[0].rsplit(".", 1)[0]
        keys += [parent + name if name.startswith(".") else name for name in names]
    return keys


def is_config_key(key: str) -> bool:
    model: type[BaseModel] | None = Config
    for part in key.split("."):
        if model is None or part not in model.model_fields:
            return False
        model = _field_model(model.model_fields[part].annotation)
    return True


def test_every_key_in_the_readme_table_is_a_config_key():
    """The README's key table is documentation users copy into --set: a renamed or removed key must fail here."""
    keys = readme_table_keys((REPO / "README.md").read_text(encoding="utf-8"))
    assert len(keys) > 30, keys
    assert [key for key in keys if not is_config_key(key)] == []
    assert not is_config_key("training.packing_mode") and not is_config_key("model.lora.r.x")  # the check can fail


def test_a_runs_log_lies_under_its_checkpoint_folder_unless_given(tmp_path):
    """`trainer train --out DIR` put the checkpoints in DIR but metrics.jsonl in ./outputs/logs: two runs with
    different --out in one folder wrote one log."""
    from trainer.stage_config import stage_config

    runs = [stage_config(DEBUG_CONFIG, [], None, {"--out": tmp_path / n}, "training.output_dir") for n in ("a", "b")]
    assert [run.training.logging_dir for run in runs] == [tmp_path / "a" / "logs", tmp_path / "b" / "logs"]
    given = [f"training.logging_dir={tmp_path / 'logs'}"]
    given_log = stage_config(DEBUG_CONFIG, given, None, {"--out": tmp_path / "a"}, "training.output_dir").training
    assert given_log.logging_dir == tmp_path / "logs"


def sealed_checkpoint(tmp_path: Path, *trained_with: str) -> Path:
    """A checkpoint folder holding only the config training sealed in it (what `trained_config` reads)."""
    from trainer.checkpoints.sealed import TRAINED_CONFIG
    from trainer.config_file import save_config

    folder = tmp_path / "checkpoint-2"
    save_config(load_config(REPO / "configs/training/debug.yaml", list(trained_with)), folder / TRAINED_CONFIG)
    return folder


def test_a_set_asking_for_nothing_or_for_the_sealed_value_is_accepted_by_evaluate_and_export(tmp_path):
    """`auto` asks for nothing in particular, and the sealed (resolved) value asks for what was trained: neither
    contradicts the checkpoint, whichever config file is given, and the checkpoint's value is used."""
    from trainer.checkpoints.sealed import trained_config

    checkpoint = sealed_checkpoint(tmp_path, "training.precision=fp32")
    default = REPO / "configs/training/default.yaml"
    for given in ("training.precision=auto", "training.precision=fp32", "training={precision: auto}"):
        config = trained_config(load_config(default, [given]), checkpoint)
        assert config.training.precision == "fp32", given
        assert config.model.tiny is not None  # the checkpoint's model, not default.yaml's 7B


def test_a_concrete_different_value_contradicts_the_checkpoint_and_auto_only_passes_where_the_type_has_it(
    tmp_path, monkeypatch
):
    from trainer.checkpoints import sealed
    from trainer.config_file import auto_keys

    checkpoint = sealed_checkpoint(tmp_path, "training.precision=fp32", "training.packing=false")
    debug = REPO / "configs/training/debug.yaml"
    with pytest.raises(TrainerError) as err:
        sealed.trained_config(load_config(debug, ["training.precision=bf16"]), checkpoint)
    assert str(err.value).startswith(
        f"--set training.precision=bf16: {checkpoint} was trained with training.precision='fp32'; "
    )
    # `model.revision` is a string: there `auto` names a revision, which the checkpoint was not trained on.
    with pytest.raises(TrainerError, match=r"was trained with model\.revision=None"):
        sealed.trained_config(load_config(debug, ["model.revision=auto"]), checkpoint)
    # The rule comes from the config's types, not from a list of keys: every key whose type admits `auto`.
    assert set(auto_keys()) == {
        "model.attn_implementation", "training.packing", "training.precision", "training.liger_kernel",
        "training.wandb", "evaluation.backend", "export.merge_base",
    }  # fmt: skip
    monkeypatch.setattr(sealed, "TRAINED_KEYS", (*sealed.TRAINED_KEYS, "training.packing"))
    accepted = sealed.trained_config(load_config(debug, ["training.packing=auto"]), checkpoint)
    assert accepted.training.packing is False
    with pytest.raises(TrainerError, match=r"--set training\.packing=true: .* training\.packing=False;"):
        sealed.trained_config(load_config(debug, ["training.packing=true"]), checkpoint)
