"""The preemption notice (trainer/training/notice.py): sky/train.yaml's preemption hook, run by SkyPilot's own
hook executor beside a training process, makes it save the step it is on and exit 75 within the hook's timeout;
the restart loses no step and ends with the uninterrupted run's adapter. A notice during a save, twice, or after
training ended does no harm."""

import json
import shutil
import time
from pathlib import Path

import boto3
import pytest
from safetensors.torch import load_file
from transformers import TrainerCallback

from tests.helpers import REPO, logged_steps, preemption_hook, train_process, training_in_background, wait_for_step
from trainer.checkpoints.folder import MANIFEST, checkpoint_dirs, problem
from trainer.cli import main
from trainer.errors import Preempted
from trainer.synthesis.synthesize import synthesize
from trainer.training.notice import NOTICE_FILE
from trainer.training.train import train

pytestmark = pytest.mark.slow

STEPS = 30


def adapter(output_dir: Path, step: int) -> dict:
    return load_file(output_dir / f"checkpoint-{step}" / "adapter_model.safetensors")


def test_the_hook_saves_the_step_in_flight_exits_75_and_the_restart_loses_no_step(make_config, bucket, tmp_path):
    config = make_config(f"training.max_steps={STEPS}", "training.save_steps=1000", "training.logging_steps=1")
    synthesize(config)
    run_uri = f"s3://{bucket}/runs/notice"
    assert main(["artifacts", "push", str(config.data.output_dir), f"{run_uri}/data"]) == 0
    out, logs = config.training.output_dir, config.training.logging_dir
    ref = [f"training.output_dir={tmp_path / 'reference'}", f"training.logging_dir={tmp_path / 'reference-logs'}"]
    reference = train_process(config, f"training.max_steps={STEPS}", *ref)
    assert reference.returncode == 0, reference.stderr[-2000:]

    workspace, home = tmp_path / "spot-1", tmp_path / "home"
    workspace.mkdir()
    node = {"WORKSPACE": str(workspace)}  # what the node agent's environment holds in this test; the YAML's default
    with (
        training_in_background(config, f"training.max_steps={STEPS}", run_uri=run_uri, cwd=workspace) as process,
        preemption_hook(REPO / "sky/train.yaml", "trainer-train", node, home) as hook,
        preemption_hook(REPO / "sky/train.yaml", "trainer-train", node, home) as again,  # a second notice
    ):
        wait_for_step(logs / "metrics.jsonl", 3, process)
        hook.fire()
        again.fire()
        hook_log, again_log = hook.finish(), again.finish()
        record = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key="runs/notice/run.json")["Body"].read())
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == Preempted.exit_code, stderr[-3000:]
    assert "Preemption hook executed successfully" in hook_log and "timed out" not in hook_log + again_log
    assert hook.seconds < hook.timeout
    step = int(stderr.split("stopped by the preemption notice")[1].split("at step ")[1].split(";")[0])
    assert 3 <= step < STEPS and "and uploaded" in stderr
    # The hook returned once the trainer had recorded its stop: the step it was on, saved and in the bucket.
    assert (record["status"], record["stage"], record["step"]) == ("preempted", "train", step)
    assert logged_steps(logs / "metrics.jsonl")[-1] == step  # no step trained past the checkpoint: none lost
    assert [p.name for p in checkpoint_dirs(out)] == [f"checkpoint-{step}"]
    assert problem(out / f"checkpoint-{step}") is None
    head = boto3.client("s3").head_object(Bucket=bucket, Key=f"runs/notice/checkpoints/checkpoint-{step}/{MANIFEST}")
    assert head["ContentLength"] > 0

    # A new machine: nothing local but the notice file left in the working folder, which must not stop it.
    shutil.rmtree(out)
    shutil.rmtree(logs)
    assert (workspace / NOTICE_FILE).is_file()
    with training_in_background(config, f"training.max_steps={STEPS}", run_uri=run_uri, cwd=workspace) as restart:
        stdout, stderr = restart.communicate(timeout=300)
    assert restart.returncode == 0, stderr[-3000:]
    assert "resuming from" in stdout and f"checkpoint-{step}" in stdout
    assert logged_steps(logs / "metrics.jsonl") == list(range(1, STEPS + 1))
    ours, theirs = adapter(out, STEPS), adapter(tmp_path / "reference", STEPS)
    assert ours.keys() == theirs.keys()
    for key, tensor in theirs.items():
        assert (ours[key] - tensor).abs().max() <= 1e-5 * tensor.abs().max(), key

    # A notice after training ended: nothing listens, the hook returns at once and leaves nothing behind.
    with preemption_hook(REPO / "sky/train.yaml", "trainer-train", node, home) as late:
        late.fire()
        late_log = late.finish()
    assert "Preemption hook executed successfully" in late_log and late.seconds < 10
    assert not (workspace / NOTICE_FILE).exists()


class NoticeDuringSave(TrainerCallback):
    """Writes the notice while checkpoint `step` is being saved (after transformers' files, before its upload)."""

    def __init__(self, notice: Path, step: int):
        self.notice, self.step = notice, step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.notice.write_text(time.strftime("%c"))


def test_a_notice_during_a_save_stops_at_the_next_step_with_both_checkpoints_whole(
    make_config, bucket, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the working folder: where the hook writes the notice
    config = make_config("training.max_steps=20", "training.save_steps=2", f"training.checkpoint_uri=s3://{bucket}/s")
    synthesize(config)
    with pytest.raises(Preempted, match=r"stopped by the preemption notice .* at step 3; .* and uploaded") as stop:
        train(config, callbacks=(NoticeDuringSave(tmp_path / NOTICE_FILE, 2),))
    assert stop.value.step == 3
    saved = checkpoint_dirs(config.training.output_dir)
    assert [p.name for p in saved] == ["checkpoint-2", "checkpoint-3"] and all(problem(p) is None for p in saved)
