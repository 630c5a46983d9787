"""sky/train-multinode.yaml's run script on two "nodes" (two local processes, each with its own disk, gloo on CPU),
stopped by a preemption notice to one of them and resumed on two new ones, trains the same model as one process
with the same global batch: the same adapter."""

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.helpers import DEBUG_CONFIG, REPO, background, free_port, preemption_hook, set_args, wait_for_step
from trainer.cli import main
from trainer.errors import Preempted, TrainerError
from trainer.training.resume import same_on_every_process

pytestmark = pytest.mark.slow  # two training processes and a third run

STEPS = 12  # within the first epoch (about 13 steps of 4 sequences): at an epoch's end accelerate evens out the
# processes' last batches with repeated rows, which one process does not, so the adapters part there
# Same global batch (2 sequences per process x 2 processes = 2 x 2 accumulation steps), no dropout: the runs differ
# only by floating-point reduction order.
COMMON = [
    f"training.max_steps={STEPS}", "training.save_steps=1000", "training.eval_steps=5", "training.logging_steps=1",
    "training.per_device_train_batch_size=2", "model.lora.dropout=0", "model.quantization=null",
]  # fmt: skip
# Relative, on the validation losses. Not bit-equal although the models are: distributed evaluation fills the last
# process's short batch with repeats of the first rows (accelerate's even_batches), and that batch's mean loss
# includes them.
LOSS_TOLERANCE = 1e-2
TASK = REPO / "sky/train-multinode.yaml"
METRICS = "outputs/checkpoints/logs/metrics.jsonl"  # in a node's workspace: training.logging_dir's default there


def eval_losses(metrics: str) -> list[float]:
    return [record["eval_loss"] for record in map(json.loads, metrics.splitlines()) if "eval_loss" in record]


class Nodes(list):
    """The two nodes' processes; each writes its output to `<workspace>.log` beside its workspace (a file, not a pipe:
    no node can block on a full pipe while the test reads the other)."""

    def __init__(self, processes: list[subprocess.Popen], logs: list[Path]):
        super().__init__(processes)
        self.logs = logs

    def outputs(self, timeout: float, grace: float = 120) -> list[str]:
        """Each node's output once every node has exited. Fails with the end of both logs if `timeout` seconds pass
        first, or if a node is still running `grace` seconds after another exited: a rank that failed alone leaves
        the other waiting in a collective (SkyPilot would end the job's other nodes then)."""
        deadline = time.monotonic() + timeout
        while any(node.poll() is None for node in self):
            if any(node.poll() is not None for node in self):
                deadline = min(deadline, time.monotonic() + grace)
            if time.monotonic() > deadline:
                codes = ", ".join(f"{log.stem}: exit {node.poll()}" for node, log in zip(self, self.logs, strict=True))
                tails = "".join(f"\n--- {log.name}\n{log.read_text()[-3000:]}" for log in self.logs)
                pytest.fail(f"the nodes did not all exit in time ({codes}){tails}")
            time.sleep(0.5)
        return [log.read_text() for log in self.logs]


@contextlib.contextmanager
def two_nodes(workspaces: list[Path], bucket: str, extra: list[str]) -> Iterator[Nodes]:
    """sky/train-multinode.yaml's run script on two "nodes": each with its own workspace, torchrun with gloo on CPU,
    rendezvous on a free local port. Both end with the block, however it ends."""
    task = yaml.safe_load(TASK.read_text())
    port = free_port()  # parallel runs cannot collide
    logs = [workspace.with_name(f"{workspace.name}.log") for workspace in workspaces]
    with contextlib.ExitStack() as running:
        processes = []
        for rank, (workspace, log) in enumerate(zip(workspaces, logs, strict=True)):
            env = {**os.environ, **task["envs"], "BUCKET": bucket, "RUN_NAME": "mn", "TRAINER_HOME": str(REPO)}
            env |= {"CONFIG": "configs/training/debug.yaml", "WORKSPACE": str(workspace)}
            env |= {"SKYPILOT_NUM_NODES": "2", "SKYPILOT_NODE_RANK": str(rank), "SKYPILOT_NUM_GPUS_PER_NODE": "1"}
            env |= {
                "SKYPILOT_NODE_IPS": "127.0.0.1\n127.0.0.1",
                "MASTER_PORT": str(port),
                "EXTRA_ARGS": " ".join(set_args(extra)),  # the task word-splits it
            }
            env["PATH"] = f"{os.path.dirname(sys.executable)}:{env['PATH']}"
            run = ["bash", "-c", task["run"]]
            output = running.enter_context(log.open("wb"))
            processes.append(running.enter_context(background(run, env=env, stdout=output, stderr=subprocess.STDOUT)))
        yield Nodes(processes, logs)


def test_a_notice_to_one_node_stops_both_at_one_step_and_the_restart_matches_one_process(
    s3_server, bucket, model_cache, tmp_path
):
    """The preemption hook (as SkyPilot's executor runs it) on node 1 alone: every rank stops after the same step,
    one checkpoint is written, both nodes exit 75. Two new nodes resume from the bucket and end with the adapter
    of one process trained with the same global batch, uninterrupted."""
    data = tmp_path / "processed"
    base = [f"model.cache_dir={model_cache}", "data.sources=[]", f"data.output_dir={data}"]
    assert main(["synthesize", "--config", str(DEBUG_CONFIG), *set_args(base)]) == 0
    assert main(["artifacts", "push", str(data), f"s3://{bucket}/runs/mn/data"]) == 0
    extra = [f"model.cache_dir={model_cache}", "data.sources=[]", *COMMON, "training.gradient_accumulation_steps=1"]

    spot = [tmp_path / "node0", tmp_path / "node1"]
    node1 = {"WORKSPACE": str(spot[1])}
    with (
        preemption_hook(TASK, "trainer-train-multinode", node1, tmp_path / "home") as hook,
        two_nodes(spot, bucket, extra) as nodes,
    ):
        wait_for_step(spot[0] / METRICS, 3, nodes[0])
        hook.fire()
        hook_log = hook.finish()
        outputs = nodes.outputs(timeout=300)
    assert [node.returncode for node in nodes] == [Preempted.exit_code] * 2, outputs[0][-3000:] + outputs[1][-3000:]
    assert "Preemption hook executed successfully" in hook_log and hook.seconds < hook.timeout
    step = int(outputs[1].split("stopped by the preemption notice")[1].split("at step ")[1].split(";")[0])
    assert 3 <= step < STEPS
    assert f"stopped by a signal or notice to another process of the run at step {step};" in outputs[0]
    record = json.loads(boto3.client("s3").get_object(Bucket=bucket, Key="runs/mn/run.json")["Body"].read())
    assert (record["status"], record["step"]) == ("preempted", step)
    assert objects_under(bucket, "runs/mn/checkpoints/") == {f"checkpoint-{step}"}  # one checkpoint, by rank 0
    other_node = {p.name for p in (spot[1] / "outputs/checkpoints").rglob("checkpoint-*/*")}
    assert other_node == {"rng_state_1.pth"}  # rank 1 saved the same step: its RNG state alone

    recovered = [tmp_path / "node2", tmp_path / "node3"]  # two new machines: nothing local
    with two_nodes(recovered, bucket, extra) as nodes:
        outputs = nodes.outputs(timeout=600)
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "resuming from" in outputs[0] and f"checkpoint-{step}" in outputs[0]
    node0 = recovered[0] / "outputs"
    assert (node0 / "checkpoints" / f"checkpoint-{STEPS}" / "MANIFEST.json").is_file()
    distributed = eval_losses((recovered[0] / METRICS).read_text())

    single = tmp_path / "single"
    args = [*base, *COMMON, "training.gradient_accumulation_steps=2", f"training.output_dir={single / 'ckpt'}"]
    args.append(f"training.logging_dir={single / 'logs'}")
    assert main(["train", "--config", str(DEBUG_CONFIG), *set_args(args)]) == 0
    one_process = eval_losses((single / "logs/metrics.jsonl").read_text())

    assert len(distributed) == len(one_process) == 3  # steps 5 and 10, and the last (transformers evaluates it)
    assert distributed[0] - distributed[-1] > 2 * LOSS_TOLERANCE * distributed[0]  # it trained, by more than the slack
    for multi, one in zip(distributed, one_process, strict=True):
        assert multi == pytest.approx(one, rel=LOSS_TOLERANCE)
    # The same batches in the same steps (one order on every process; accelerate deals batch i to process i mod 2):
    # the adapters agree to float rounding. Measured: equal bit for bit.
    multi_adapter = load_file(node0 / "checkpoints" / f"checkpoint-{STEPS}" / "adapter_model.safetensors")
    one_adapter = load_file(single / "ckpt" / f"checkpoint-{STEPS}" / "adapter_model.safetensors")
    assert multi_adapter.keys() == one_adapter.keys()
    assert max((multi_adapter[k] - one_adapter[k]).abs().max().item() for k in one_adapter) <= 1e-6
    assert max(one_adapter[k].abs().max().item() for k in one_adapter if "lora_B" in k) > 1e-3  # it trained


def objects_under(bucket: str, prefix: str) -> set[str]:
    """The names of the folders directly under `prefix`."""
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/")
    return {p["Prefix"][len(prefix) :].rstrip("/") for p in listed.get("CommonPrefixes", [])}


def resume_on_rank(rank: int, port: int, found: list[str | None], out: Path) -> None:
    """One process of a two-process gloo group: what same_on_every_process made of `found[rank]`, in out/<rank>."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        same_on_every_process(Path(found[rank]) if found[rank] else None)
        (out / str(rank)).write_text("agreed")
    except TrainerError as exc:
        (out / str(rank)).write_text(str(exc))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize(
    ("found", "verdict"),
    [
        (["run/checkpoint-4", "other/checkpoint-4"], "agreed"),  # one step, each node its own folder
        (["run/checkpoint-4", None], "(rank 0: checkpoint-4, rank 1: none)"),  # rank 1 could not fetch it
    ],
)
def test_every_process_resumes_from_one_step_or_every_process_stops(found, verdict, tmp_path):
    """A node that starts over while the other resumes would leave one process waiting in a collective for good:
    both raise instead, naming what each found."""
    torch.multiprocessing.spawn(resume_on_rank, args=(free_port(), found, tmp_path), nprocs=2)
    for rank in (0, 1):
        assert verdict in (tmp_path / str(rank)).read_text()
