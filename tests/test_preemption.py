"""Spot preemption: SIGKILL at any instant, torn checkpoints, an object store that goes away, SIGTERM."""

import functools
import hashlib
import json
import random
import shutil
import signal
import time

import boto3
import pytest
from safetensors.torch import load_file
from transformers import TrainerCallback

from tests.helpers import PRODUCTION_TINY, logged_losses, train_process, training_in_background
from trainer.checkpoints.folder import MANIFEST, problem
from trainer.checkpoints.store import CheckpointStore
from trainer.errors import TrainerError
from trainer.synthesis.synthesize import synthesize
from trainer.training.train import train

STEPS, SAVE = 12, 3


def spot_recovery(config) -> list[str]:
    """The `--set` overrides of a run that mirrors every checkpoint to S3 and keeps them all."""
    t = config.training
    return [f"training.max_steps={t.max_steps}", f"training.checkpoint_uri={t.checkpoint_uri}",
            "training.save_total_limit=null"]  # fmt: skip


@pytest.mark.slow
def test_sigkilled_three_times_resumes_to_the_same_model(make_config, bucket, tmp_path):
    """On the production-shaped config: bf16 autocast, gradient checkpointing, NF4 with bf16 compute."""
    common = [
        f"training.max_steps={STEPS}",
        f"training.save_steps={SAVE}",
        "training.logging_steps=1",
        "training.save_total_limit=null",
    ]
    reference = make_config(*common, f"training.checkpoint_uri=s3://{bucket}/reference", config_file=PRODUCTION_TINY)
    synthesize(reference)
    train(reference)

    killed = make_config(
        *common,
        f"training.checkpoint_uri=s3://{bucket}/killed",
        f"training.output_dir={tmp_path / 'killed'}",
        f"training.logging_dir={tmp_path / 'klogs'}",
        config_file=PRODUCTION_TINY,
    )
    overrides = spot_recovery(killed)
    first_kill = random.Random(2026).choice([1, 2, 4, 5])  # any step that is not a save step
    run = functools.partial(train_process, killed, *overrides, config_file=PRODUCTION_TINY)
    assert run(kill_at=f"step:{first_kill}").returncode == -signal.SIGKILL
    assert run(kill_at="save:6").returncode == -signal.SIGKILL  # mid checkpoint write
    third = run(kill_at="upload:9")  # mid upload: checkpoint-9 is complete locally, torn remotely
    assert third.returncode == -signal.SIGKILL
    assert "skipping torn checkpoint" in third.stdout and "checkpoint-6: no manifest" in third.stdout

    # The spot VM is gone: a new machine starts with nothing local and resumes from the object store.
    shutil.rmtree(killed.training.output_dir)
    shutil.rmtree(killed.training.logging_dir)
    last = run()
    assert last.returncode == 0, last.stderr[-2000:]
    assert f"s3://{bucket}/killed/checkpoint-9: no manifest" in last.stdout
    assert "resuming from" in last.stdout and "checkpoint-6" in last.stdout

    ours = load_file(killed.training.output_dir / f"checkpoint-{STEPS}" / "adapter_model.safetensors")
    theirs = load_file(reference.training.output_dir / f"checkpoint-{STEPS}" / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    for key, tensor in theirs.items():
        assert (ours[key] - tensor).abs().max() <= 1e-5 * tensor.abs().max(), key
    got, expected = logged_losses(killed.training.logging_dir), logged_losses(reference.training.logging_dir)
    assert [s for s, _ in got] == list(range(1, STEPS + 1))
    assert [round(loss, 5) for _, loss in got] == [round(loss, 5) for _, loss in expected]
    remote = CheckpointStore(tmp_path / "elsewhere", f"s3://{bucket}/killed").latest_complete()
    assert remote is not None and remote.name == f"checkpoint-{STEPS}"


def corrupt(folder, how):
    target = folder / "optimizer.pt"
    if how == "missing":
        target.unlink()
    elif how == "truncated":
        target.write_bytes(target.read_bytes()[:-10])
    else:  # same size, one byte changed
        data = bytearray(target.read_bytes())
        data[100] ^= 0xFF
        target.write_bytes(bytes(data))


@pytest.mark.slow
def test_torn_checkpoints_are_skipped_locally_and_remotely(make_config, bucket, tmp_path):
    config = make_config(
        "training.max_steps=5",
        "training.save_steps=1",
        "training.save_total_limit=null",
        f"training.checkpoint_uri=s3://{bucket}/run",
    )
    synthesize(config)
    train(config)
    out = config.training.output_dir
    for step, how in ((5, "missing"), (4, "truncated"), (3, "altered")):
        corrupt(out / f"checkpoint-{step}", how)
    warnings = []
    assert CheckpointStore(out, warn=warnings.append).latest_complete() == out / "checkpoint-2"
    assert [w.split(": ", 1)[1] for w in warnings] == [
        "skipping torn checkpoint " + str(out / "checkpoint-5") + ": optimizer.pt is missing",
        "skipping torn checkpoint " + str(out / "checkpoint-4") + ": optimizer.pt has "
        f"{(out / 'checkpoint-4' / 'optimizer.pt').stat().st_size} bytes, the manifest says "
        f"{json.loads((out / 'checkpoint-4' / MANIFEST).read_text())['files']['optimizer.pt']['size']}",
        "skipping torn checkpoint " + str(out / "checkpoint-3") + ": optimizer.pt does not match its sha256",
    ]

    # Remotely: a deleted object and a replaced object; an empty machine falls back to checkpoint-3.
    s3 = boto3.client("s3")
    s3.delete_object(Bucket=bucket, Key="run/checkpoint-5/optimizer.pt")
    s3.put_object(Bucket=bucket, Key="run/checkpoint-4/optimizer.pt", Body=b"not an optimizer")
    warnings.clear()
    empty = tmp_path / "empty-machine"
    found = CheckpointStore(empty, f"s3://{bucket}/run", warn=warnings.append).latest_complete()
    assert found == empty / "checkpoint-3" and len(warnings) == 2
    assert all("checkpoint-5" in w or "checkpoint-4" in w for w in warnings)
    assert problem(found) is None  # downloaded, verified, and sealed with its manifest


def test_a_remote_manifest_naming_files_outside_its_checkpoint_is_skipped(bucket, tmp_path):
    writer = CheckpointStore(tmp_path / "writer", f"s3://{bucket}/run")
    for step in (1, 2):
        folder = tmp_path / "writer" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "adapter_model.safetensors").write_bytes(b"weights %d" % step)
        writer.publish(folder)
        assert writer.wait(timeout=30)
    # Whoever can write to the bucket points checkpoint-2's manifest at a file two levels above the checkpoint.
    entry = {"size": 7, "sha256": hashlib.sha256(b"planted").hexdigest()}
    boto3.client("s3").put_object(Bucket=bucket, Key="run/checkpoint-2/../../planted.txt", Body=b"planted")
    writer.remote.put_json(f"checkpoint-2/{MANIFEST}", {"files": {"../../planted.txt": entry}})

    warnings = []
    machine = tmp_path / "a" / "b" / "machine"
    found = CheckpointStore(machine, f"s3://{bucket}/run", warn=warnings.append).latest_complete()
    assert found == machine / "checkpoint-1"
    assert warnings == [
        f"warning: skipping s3://{bucket}/run/checkpoint-2: refusing object key '../../planted.txt': it escapes "
        f"the destination {machine / 'checkpoint-2'}"
    ]
    assert not list(tmp_path.rglob("planted.txt"))


class ServerOutage(TrainerCallback):
    """Stops the S3 server after step `down` and brings it back after step `up`."""

    def __init__(self, server, down, up):
        self.server, self.down, self.up = server, down, up

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.down:
            self.server.stop()
        if state.global_step == self.up:
            # Let the background upload that started during the outage run out of retries (connection refused
            # fails fast) before the server returns: otherwise a fast step lets a retry succeed.
            time.sleep(2)
            self.server.start()


@pytest.mark.slow
def test_object_store_outage_mid_training_is_survived(make_config, bucket, s3_server, capsys):
    config = make_config(
        "training.max_steps=6",
        "training.save_steps=3",
        "training.save_total_limit=null",
        f"training.checkpoint_uri=s3://{bucket}/outage",
    )
    synthesize(config)
    train(config, callbacks=(ServerOutage(s3_server, down=2, up=4),))
    assert "upload of checkpoint-3" in capsys.readouterr().out
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="outage/")["Contents"]}
    assert "outage/checkpoint-6/MANIFEST.json" in keys
    assert "outage/checkpoint-3/MANIFEST.json" not in keys


@pytest.mark.slow
def test_retention_keeps_the_newest_complete_checkpoints(make_config, bucket, s3_server, monkeypatch):
    # The endpoint from the config key alone, as for R2 or MinIO without AWS_ENDPOINT_URL.
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    config = make_config(
        "training.max_steps=5",
        "training.save_steps=1",
        "training.save_total_limit=2",
        f"training.checkpoint_uri=s3://{bucket}/keep",
        f"training.checkpoint_endpoint_url={s3_server.url}",
    )
    synthesize(config)
    train(config)
    assert sorted(p.name for p in config.training.output_dir.glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-5"]
    listed = boto3.client("s3", endpoint_url=s3_server.url).list_objects_v2(Bucket=bucket)["Contents"]
    assert {o["Key"].split("/")[1] for o in listed} == {"checkpoint-4", "checkpoint-5"}


@pytest.mark.slow
def test_sigterm_saves_uploads_and_exits_for_a_restart(make_config, bucket):
    config = make_config(
        "training.max_steps=400",
        "training.save_steps=1000",
        "training.logging_steps=1",
        f"training.checkpoint_uri=s3://{bucket}/term",
    )
    synthesize(config)
    with training_in_background(config, *spot_recovery(config)) as process:
        log = config.training.logging_dir / "metrics.jsonl"
        deadline = time.time() + 120
        while not (log.is_file() and log.read_text().count("\n") >= 3) and time.time() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    assert process.returncode == 75, stderr[-2000:]
    assert "preempted: stopped by SIGTERM at step" in stderr and "and uploaded" in stderr
    step = int(stderr.split("at step ")[1].split(";")[0])
    assert 3 <= step < 400
    assert (config.training.output_dir / f"checkpoint-{step}" / MANIFEST).is_file()
    head = boto3.client("s3").head_object(Bucket=bucket, Key=f"term/checkpoint-{step}/{MANIFEST}")
    assert head["ContentLength"] > 0


@pytest.mark.slow
def test_a_final_checkpoint_that_cannot_be_uploaded_is_an_error(make_config, bucket, s3_server):
    config = make_config("training.max_steps=3", "training.save_steps=3", f"training.checkpoint_uri=s3://{bucket}/end")
    synthesize(config)
    try:
        with pytest.raises(TrainerError, match=r"checkpoint-3 could not be uploaded .* complete locally"):
            train(config, callbacks=(ServerOutage(s3_server, down=3, up=-1),))
    finally:
        s3_server.start()
    assert (config.training.output_dir / "checkpoint-3" / MANIFEST).is_file()
