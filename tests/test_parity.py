"""Production parity: the test config is default.yaml with sizes changed; a checkpoint carries the config it was
trained with and later stages follow it; a finished run is not trained on; saves by time; a stage killed outright
leaves run.json failed."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.helpers import DEBUG_CONFIG, PRODUCTION_TINY, REPO, set_args
from trainer.checkpoints.folder import MANIFEST, checkpoint_dirs
from trainer.checkpoints.sealed import TRAINED_CONFIG
from trainer.cli import main
from trainer.config_file import load_config

DEFAULT_CONFIG = REPO / "configs/training/default.yaml"
# The keys in which the production-shaped test config may differ from default.yaml: sizes, and nothing else.
SIZE_KEYS = {
    "model.name_or_path", "model.tiny",  # Qwen2's architecture at tiny dimensions, built locally
    "data.sources",  # the same framework (chi), from Debian's package instead of GitHub: the tests are offline
    "training.run_name",
    "training.num_train_epochs", "training.max_steps", "training.save_steps", "training.logging_steps",
    "training.per_device_train_batch_size", "training.per_device_eval_batch_size",
    "training.gradient_accumulation_steps", "training.max_length",
    "training.precision",  # default's auto is bf16 on a GPU; the test config names bf16 to run it under CPU autocast
    "evaluation.max_new_tokens",
}  # fmt: skip


def flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "tiny":
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_production_shaped_test_config_differs_from_default_only_in_size_keys():
    production = flat(load_config(DEFAULT_CONFIG).model_dump(mode="json"))
    tiny = flat(load_config(PRODUCTION_TINY).model_dump(mode="json"))
    assert production.keys() == tiny.keys()
    differing = {key for key in production if production[key] != tiny[key]}
    assert differing - SIZE_KEYS == set()
    assert (tiny["training.precision"], tiny["training.gradient_checkpointing"]) == ("bf16", True)
    assert (tiny["model.quantization.quant_type"], tiny["model.quantization.compute_dtype"]) == ("nf4", "bf16")
    # The check can fail: a debug-style config differs in more than sizes.
    debug = flat(load_config(DEBUG_CONFIG).model_dump(mode="json"))
    assert {key for key in production if production[key] != debug[key]} - SIZE_KEYS >= {
        "training.gradient_checkpointing", "model.quantization.compute_dtype", "model.lora.r", "export.dtype",
    }  # fmt: skip


@pytest.mark.slow
def test_every_checkpoint_seals_its_fully_resolved_config_and_a_finished_run_trains_nothing(make_config, capfd):
    from trainer.synthesis.synthesize import synthesize
    from trainer.training.train import train

    config = make_config(
        "training.max_steps=3", "training.save_steps=100", "training.save_every_minutes=0.000001",
        "training.save_total_limit=null", "training.packing=auto", "model.attn_implementation=auto",
    )  # fmt: skip
    synthesize(config)
    result = train(config)
    # Saved by time at every step (save_steps=100 would save only at the end).
    assert [p.name for p in checkpoint_dirs(config.training.output_dir)] == [f"checkpoint-{i}" for i in (1, 2, 3)]
    for folder in checkpoint_dirs(config.training.output_dir):
        assert TRAINED_CONFIG in json.loads((folder / MANIFEST).read_text())["files"]
    sealed = yaml.safe_load((result.final_checkpoint / TRAINED_CONFIG).read_text())
    autos = {k for k, v in flat({"model": sealed["model"], "training": sealed["training"]}).items() if v == "auto"}
    assert autos == {"training.resume"}  # where to resume from, not a choice about the function trained
    assert (sealed["model"]["attn_implementation"], sealed["training"]["packing"]) == ("sdpa", False)

    capfd.readouterr()
    again = train(config)
    assert again.final_checkpoint == result.final_checkpoint
    assert "nothing to train" in capfd.readouterr().out
    assert [p.name for p in checkpoint_dirs(config.training.output_dir)][-1] == "checkpoint-3"
    further = train(config.model_copy(update={"training": config.training.model_copy(update={"max_steps": 4})}))
    assert further.final_checkpoint.name == "checkpoint-4"


@pytest.mark.slow
def test_evaluate_and_export_follow_the_checkpoint_not_the_config_file(make_config, model_cache, tmp_path, capfd):
    """The sketch's `scripts/evaluate.py --checkpoint …` after a debug run (default.yaml: Qwen 7B, 4-bit) and
    sky/export.yaml (default.yaml) on a plain-LoRA run: both use what the checkpoint was trained with."""
    from trainer.checkpoints.sealed import trained_config
    from trainer.config_file import load_config
    from trainer.synthesis.synthesize import synthesize
    from trainer.training.train import train

    config = make_config("model.quantization=null", "training.max_steps=2", "training.save_steps=100")
    synthesize(config)
    checkpoint = train(config).final_checkpoint
    safe = [f"model.cache_dir={model_cache}", f"data.output_dir={config.data.output_dir}"]
    evaluate = [sys.executable, str(REPO / "scripts/evaluate.py"), "--checkpoint", str(checkpoint)]
    evaluate += [*set_args(safe), "--out", str(tmp_path / "eval"), "--limit", "2", "--max-new-tokens", "4"]
    done = subprocess.run(evaluate, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "eval/report.json").read_text())
    assert report["checkpoint"] == str(checkpoint)
    assert report["config"]["model"]["quantization"] is None and report["config"]["model"]["tiny"] is not None

    out = tmp_path / "model"
    args = ["export", "--config", str(DEFAULT_CONFIG), "--checkpoint", str(checkpoint), *set_args(safe)]
    assert main([*args, "--out", str(out), "--set", f"evaluation.output_dir={tmp_path / 'eval'}"]) == 0
    exported = yaml.safe_load((out / "trainer_config.yaml").read_text())
    assert exported["model"]["quantization"] is None and exported["export"]["merge_base"] == "auto"
    assert "into the original base weights" in (out / "README.md").read_text()
    # The run's name comes from the checkpoint too (the exported folder and card are named for it), unless --set.
    assert exported["training"]["run_name"] == config.training.run_name == "tiny-debug"
    renamed = trained_config(load_config(DEFAULT_CONFIG, ["training.run_name=chi-v2"]), checkpoint)
    assert renamed.training.run_name == "chi-v2"

    capfd.readouterr()
    contradicting = [*args, "--out", str(tmp_path / "m2"), "--set", "model.lora.r=8"]
    assert main(contradicting) == 2
    err = capfd.readouterr().err
    assert err.startswith(f"error: --set model.lora.r=8: {checkpoint} was trained with model.lora.r=16;")
    assert not (tmp_path / "m2").exists()


@pytest.mark.slow
def test_a_stage_killed_outright_leaves_run_json_failed_with_the_stage_named(s3_server, bucket, make_config, tmp_path):
    from trainer.artifacts import part_uri, read_run
    from trainer.storage import upload_folder
    from trainer.synthesis.synthesize import synthesize

    config = make_config()
    synthesize(config)
    run_uri = f"s3://{bucket}/runs/oom"
    upload_folder(config.data.output_dir, part_uri(run_uri, "data"))
    args = [sys.executable, "-m", "trainer.cli", "train", "--config", str(DEBUG_CONFIG), "--run-uri", run_uri]
    args += set_args([f"model.cache_dir={config.model.cache_dir}", f"data.output_dir={tmp_path / 'fresh-data'}"])
    args += ["--out", str(tmp_path / "ckpt"), "--set", f"training.logging_dir={tmp_path / 'logs'}"]
    env = {**os.environ, "TRAINER_KILL_AT": "step:1"}  # SIGKILL, as the kernel's OOM killer sends it
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 128 + 9, done.stderr[-2000:]
    assert done.stderr.splitlines()[-1] == f"error: train was killed by SIGKILL; {run_uri}/run.json says failed"
    record = read_run(run_uri)
    assert (record["status"], record["stage"]) == ("failed", "train")
    assert record["error"] == "train was killed by SIGKILL (out of memory, most likely)"


@pytest.mark.slow
def test_checkpoint_from_the_bucket_alone_is_enough_to_evaluate(pipeline_run, s3_server, bucket, tmp_path, capfd):
    from trainer.storage import upload_folder

    checkpoint = pipeline_run.training.output_dir / "checkpoint-20"
    uri = f"s3://{bucket}/runs/elsewhere/checkpoints/checkpoint-20"
    upload_folder(checkpoint, uri)
    fresh = tmp_path / "fresh-machine"
    safe = [f"model.cache_dir={pipeline_run.model.cache_dir}", f"data.output_dir={pipeline_run.data.output_dir}"]
    safe.append(f"training.output_dir={fresh / 'checkpoints'}")
    args = ["evaluate", "--config", str(DEFAULT_CONFIG), "--checkpoint", uri, *set_args(safe)]
    assert main([*args, "--out", str(fresh / "eval"), "--limit", "1", "--max-new-tokens", "2"]) == 0
    report = json.loads((fresh / "eval/report.json").read_text())
    assert report["checkpoint"] == str(fresh / "checkpoints/checkpoint-20")
    assert (fresh / "checkpoints/checkpoint-20/adapter_model.safetensors").read_bytes() == (
        checkpoint / "adapter_model.safetensors"
    ).read_bytes()
    assert main([*args[:4], f"s3://{bucket}/runs/elsewhere/checkpoints/checkpoint-7", *set_args(safe)]) == 2
    assert capfd.readouterr().err.endswith("checkpoint-7: no complete checkpoint there (no MANIFEST.json)\n")
