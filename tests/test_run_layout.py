"""Every stage command takes `--out` for where its output goes and `--run-uri` for a run's layout in S3, and keeps
that run's run.json current: what a single-stage SkyPilot task relies on."""

import boto3
import pytest

from tests.helpers import DEBUG_CONFIG, SAMPLE_EXAMPLES, set_args
from trainer.artifacts import read_run
from trainer.cli import main


def keys(bucket: str, prefix: str) -> set[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {item["Key"][len(prefix) :] for item in listed}


@pytest.mark.slow  # the command runs under its supervisor: two processes
def test_synthesize_writes_to_out_and_to_the_runs_data(s3_server, bucket, tmp_path, capfd):
    run_uri = f"s3://{bucket}/runs/r1"
    overrides = [f"data.examples_dir={SAMPLE_EXAMPLES}", "data.sources=[]", f"data.cache_dir={tmp_path / 'cache'}"]
    out = tmp_path / "somewhere" / "processed"
    args = ["synthesize", "--config", str(DEBUG_CONFIG), *set_args(overrides), "--out", str(out), "--run-uri", run_uri]
    assert main(args) == 0
    assert f"→ {out}" in capfd.readouterr().out
    assert (out / "dataset_dict.json").is_file() and (out / "manifest.json").is_file()
    stored = keys(bucket, "runs/r1/")
    assert {"data/dataset_dict.json", "data/manifest.json", "data/symbols.jsonl", "run.json"} <= stored
    record = read_run(run_uri)
    assert (record["status"], record["stage"], record["data"]) == ("synthesize done", "synthesize", f"{run_uri}/data")


@pytest.mark.slow  # the command runs under its supervisor: two processes
def test_a_stage_whose_input_is_missing_from_the_run_fails_naming_the_stage_that_makes_it(
    s3_server, bucket, tmp_path, capfd
):
    run_uri = f"s3://{bucket}/runs/empty"
    args = ["train", "--config", str(DEBUG_CONFIG), "--out", str(tmp_path / "ckpt"), "--run-uri", run_uri]
    assert main([*args, *set_args([f"data.output_dir={tmp_path / 'data'}"])]) == 2
    err = capfd.readouterr().err
    assert err == f"error: {run_uri}/data: nothing there yet; run `trainer synthesize --run-uri {run_uri}` first\n"
    record = read_run(run_uri)
    assert (record["status"], record["stage"]) == ("failed", "train")
    assert "nothing there yet" in record["error"]
    assert not (tmp_path / "ckpt").exists()


@pytest.mark.slow
def test_export_writes_the_model_folder_named_by_out(pipeline_run, tmp_path):
    cfg = pipeline_run
    target = tmp_path / "served" / "my-model"
    overrides = [f"model.cache_dir={cfg.model.cache_dir}", f"training.output_dir={cfg.training.output_dir}"]
    overrides += [f"data.output_dir={cfg.data.output_dir}", f"evaluation.output_dir={tmp_path / 'no-eval'}"]
    args = ["export", "--config", str(DEBUG_CONFIG), *set_args(overrides), "--out", str(target)]
    assert main(args) == 0
    assert (target / "SHA256SUMS").is_file() and (target / "config.json").is_file()
    assert not (cfg.export.output_dir / "my-model").exists()
