"""The cloud path: Dockerfile lint and lock file, SkyPilot YAMLs through SkyPilot's loader, and every task's setup
and run scripts executed with bash against a local S3 server, a kill in the middle included."""

import functools
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3
import pytest
import yaml

from tests.helpers import (
    CHI,
    DEBUG_CONFIG,
    PRODUCTION_TINY,
    REPO,
    SAMPLE_EXAMPLES,
    SKY_PYTHON,
    background,
    free_port,
    log_tail,
    run_to_end,
    set_args,
    wait_for_server,
)
from tests.test_readme import readme_commands
from trainer.artifacts import begin_run, read_run, update_run
from trainer.cli import main
from trainer.errors import Preempted

SKY_YAMLS = sorted((REPO / "sky").glob("*.yaml"))
JOB_RECOVERY_KEYS = {"strategy", "max_restarts_on_errors", "recover_on_exit_codes"}
LOAD_WITH_SKYPILOT = """
import json, sys
from sky.utils import dag_utils
out = {}
for path in sys.argv[1:]:
    dag = dag_utils.load_chain_dag_from_yaml(path)
    out[path] = [
        {"name": t.name, "num_nodes": t.num_nodes, "envs": t.envs, "run": t.run, "setup": t.setup,
         "service": t.service and {"path": t.service.readiness_path, "replicas": t.service.min_replicas},
         "resources": [{"accelerators": r.accelerators, "use_spot": r.use_spot, "image_id": r.image_id,
                        "job_recovery": r.job_recovery, "cpus": r.cpus, "ports": r.ports, "hooks": r.hooks}
                       for r in t.resources]}
        for t in dag.tasks
    ]
print(json.dumps(out, default=str))
"""


def test_dockerfile_passes_hadolint():
    done = subprocess.run([Path(sys.executable).parent / "hadolint", "Dockerfile"], cwd=REPO, capture_output=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"", b"")


def test_dockerfile_installs_from_the_lock_file_ci_uses_and_runs_as_non_root():
    dockerfile = (REPO / "Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    installs = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert installs and all("-c requirements.lock" in line for line in installs)
    assert "-c requirements.lock -e ." in makefile  # CI's install: the same constraints file
    assert re.search(r"^COPY .*requirements\.lock", dockerfile, re.MULTILINE)
    # Dependencies are installed before the code is copied, so a code change keeps their layer; the wandb extra
    # with them, since sky/train.yaml passes WANDB_API_KEY.
    assert dockerfile.index('-c requirements.lock ".[wandb]"') < dockerfile.index("COPY trainer/")
    assert re.search(r"^FROM nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu\d\d\.04$", dockerfile, re.MULTILINE)
    assert re.search(r"^USER 1001:1001$", dockerfile, re.MULTILINE)
    assert 'ENTRYPOINT ["trainer"]' in dockerfile
    # torch built for the base image's CUDA, from PyTorch's index, at the locked version.
    base_cuda = re.search(r"^FROM nvidia/cuda:(\d+)\.(\d+)\.", dockerfile, re.MULTILINE).groups()
    index = re.search(r"^ARG TORCH_INDEX_URL=https://download\.pytorch\.org/whl/cu(\d+)$", dockerfile, re.MULTILINE)
    assert index and index.group(1) == "".join(base_cuda)
    assert re.search(r'pip install --index-url "\$TORCH_INDEX_URL" -c requirements\.lock torch', dockerfile)
    # Triton compiles kernels at run time: a C compiler and Python's headers; HOME for uid 1001.
    apt = next(line for line in dockerfile.split("RUN ") if "apt-get install" in line)
    assert {"gcc", "libc6-dev", "python3-dev"} <= set(apt.replace("\\", " ").split())
    assert dockerfile.index("ENV HOME=/home/trainer") > dockerfile.index("useradd --create-home --uid 1001")
    assert not re.search(r"(TOKEN|SECRET|API_KEY|PASSWORD)\s*=", dockerfile)
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*"  # everything out, then only code, configs and the lock file back in
    assert {line for line in ignored if line.startswith("!")} == {
        "!pyproject.toml", "!requirements.lock", "!README.md", "!trainer/", "!configs/", "!scripts/",
    }  # fmt: skip


@pytest.fixture(scope="module")
def sky_tasks() -> dict[str, list[dict]]:
    if not SKY_PYTHON.exists():
        pytest.fail(f"{SKY_PYTHON} missing: `make dev` installs SkyPilot into .venv-sky")
    done = subprocess.run(
        [SKY_PYTHON, "-c", LOAD_WITH_SKYPILOT, *map(str, SKY_YAMLS)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {Path(path).name: tasks for path, tasks in json.loads(done.stdout.splitlines()[-1]).items()}


@pytest.mark.slow
def test_every_sky_yaml_loads_with_skypilot(sky_tasks):
    assert sorted(sky_tasks) == [
        "evaluate.yaml", "export.yaml", "pipeline.yaml", "serve.yaml", "synthesize-teacher.yaml", "synthesize.yaml",
        "train-multinode.yaml", "train.yaml",
    ]  # fmt: skip
    (serve,) = sky_tasks["serve.yaml"]
    assert serve["service"] == {"path": "/health", "replicas": 1}  # a SkyPilot service, and a plain task too
    assert all(r["ports"] == ["8000"] and r["accelerators"] for r in serve["resources"])
    assert all(task["service"] is None for name, tasks in sky_tasks.items() if name != "serve.yaml" for task in tasks)
    for name, tasks in sky_tasks.items():
        raw = [doc for doc in yaml.safe_load_all((REPO / "sky" / name).read_text()) if doc and "run" in doc]
        assert len(raw) == len(tasks)
        for doc, task in zip(raw, tasks, strict=True):
            assert all(r["image_id"] == {"null": "docker:ghcr.io/trainer-dev/trainer:0.1.0"} for r in task["resources"])
            assert "spot_recovery" not in json.dumps(doc)
            assert all(value is not None for value in doc.get("envs", {}).values())
            assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(doc["secrets"])
            recovery = doc["resources"].get("job_recovery")
            if recovery:  # SkyPilot lets unknown keys in here pass offline: check them ourselves
                assert set(recovery) <= JOB_RECOVERY_KEYS
                assert Preempted.exit_code in recovery["recover_on_exit_codes"]
                assert all(r["job_recovery"] == recovery for r in task["resources"])


@pytest.mark.slow
def test_train_task_prefers_cheap_spot_gpus_in_order(sky_tasks):
    (task,) = sky_tasks["train.yaml"]
    gpus = [next(iter(r["accelerators"])) for r in task["resources"]]
    assert sorted(gpus) == sorted(["L4", "A10G", "L40S", "A100", "H100"])
    ordered = [next(iter(item["accelerators"].split(":"))) for item in yaml.safe_load(
        (REPO / "sky/train.yaml").read_text())["resources"]["ordered"]]  # fmt: skip
    assert ordered == ["L4", "A10G", "L40S", "A100", "H100"]
    assert all(r["use_spot"] for r in task["resources"])
    secrets = yaml.safe_load((REPO / "sky/train.yaml").read_text())["secrets"]
    assert {"WANDB_API_KEY", "HF_TOKEN"} <= set(secrets) and set(secrets.values()) == {None}
    pipeline = sky_tasks["pipeline.yaml"]
    assert [t["name"] for t in pipeline] == ["synthesize", "train", "evaluate", "export"]
    assert [bool(t["resources"][0]["accelerators"]) for t in pipeline] == [False, True, True, False]
    assert sky_tasks["train-multinode.yaml"][0]["num_nodes"] == 2


@pytest.mark.slow
def test_every_spot_training_task_declares_the_same_preemption_hook(sky_tasks):
    """As SkyPilot loads them. The hook runs without the task's `envs` (SkyPilot passes it none), so its default
    working folder must be the task's WORKSPACE; tests/test_preemption_notice.py runs it."""
    trains = re.compile(r"trainer (train|pipeline)\b|trainer\.cli train\b")
    training = [task for tasks in sky_tasks.values() for task in tasks if trains.search(task["run"])]
    assert sorted(t["name"] for t in training) == ["train", "trainer-train", "trainer-train-multinode"]
    hooks = {json.dumps(r["hooks"]) for task in training for r in task["resources"]}
    (declared,) = map(json.loads, hooks)
    assert [hook["events"] for hook in declared] == [["preemption"]]
    for task in training:
        assert f'cd "${{WORKSPACE:-{task["envs"]["WORKSPACE"]}}}"' in declared[0]["run"]
        assert 'cd "$WORKSPACE"' in task["run"] and all(r["use_spot"] for r in task["resources"])
    others = [task for tasks in sky_tasks.values() for task in tasks if task not in training]
    assert all(r["hooks"] is None for task in others for r in task["resources"])


# The moto server checks no signatures, so the AWS keys can be planted values too.
PLANTED_SECRETS = {
    "WANDB_API_KEY": "wandb-planted-9f8e7d6c5b",
    "HF_TOKEN": "hf_planted_5a4b3c2d1e",
    "GITHUB_TOKEN": "ghp_planted_1q2w3e4r5t",
    "AWS_ACCESS_KEY_ID": "AKIAPLANTED7X6Y5Z4W",
    "AWS_SECRET_ACCESS_KEY": "aws-planted-secret-0p9o8i7u",
    "VLLM_API_KEY": "vllm-planted-key-3e4r5t6y",
}


def set_up(task: dict, env: dict[str, str], workspace: Path, outputs: list[str]) -> dict[str, str]:
    """A task's setup run with bash in the node's environment (returned: what its run block gets)."""
    full = {**os.environ, **task["envs"], **env, "WORKSPACE": str(workspace)}
    full["PATH"] = f"{Path(sys.executable).parent}:{full['PATH']}"
    setup = run_to_end(["bash", "-c", task["setup"]], timeout=300, env=full)
    outputs += [setup.stdout, setup.stderr]
    assert setup.returncode == 0, setup.stderr
    return full


def run_task(task: dict, env: dict[str, str], workspace: Path, outputs: list[str]) -> subprocess.CompletedProcess:
    """A task's setup then run, with bash, the way a SkyPilot node does, in the given environment; their stdout and
    stderr are appended to `outputs`."""
    full = set_up(task, env, workspace, outputs)
    done = run_to_end(["bash", "-c", task["run"]], timeout=900, env=full)
    outputs += [done.stdout, done.stderr]
    return done


def objects(bucket: str, prefix: str) -> set[str]:
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {item["Key"][len(prefix) :] for page in pages for item in page.get("Contents", [])}


# `vllm serve` as sky/synthesize-teacher.yaml and sky/serve.yaml call it, answered by `transformers serve`, a real
# OpenAI-compatible server: the tasks' wiring (setup installing nothing when vllm is there, the model pulled, start,
# readiness wait, the run or the queries pointed at it, teardown) is what runs for real; vLLM's own flags are held
# to the ones written here (argparse refuses any other), which vLLM's docs give (`--enable-auto-tool-choice
# --tool-call-parser hermes` for Qwen 2.5). What this cannot show is vLLM itself running them: it needs CUDA.
# SHIM_ARGS: a file to record the arguments in; SHIM_PORT: the port to serve on instead (serve.yaml's is fixed).
VLLM_SHIM = """#!{python}
import argparse, os, sys
parser = argparse.ArgumentParser(prog="vllm")
serve = parser.add_subparsers(dest="command", required=True).add_parser("serve")
serve.add_argument("model")
serve.add_argument("--host", required=True)
serve.add_argument("--port", required=True)
serve.add_argument("--served-model-name")
serve.add_argument("--max-model-len", type=int)
serve.add_argument("--gpu-memory-utilization", type=float)
serve.add_argument("--enable-auto-tool-choice", action="store_true")
serve.add_argument("--tool-call-parser", choices=["hermes"])
serve.add_argument("--generation-config", choices=["auto", "vllm"])
args = parser.parse_args()
if os.environ.get("SHIM_ARGS"):
    with open(os.environ["SHIM_ARGS"], "w") as record:
        record.write(" ".join(sys.argv[1:]))
model = args.model
if args.served_model_name and args.served_model_name != model:  # transformers serve answers to the folder's name
    os.symlink(model, args.served_model_name)
    model = args.served_model_name
port = os.environ.get("SHIM_PORT", args.port)
# vLLM parses tool calls only for a request that offers tools, and answers a <tool_call> region that is not JSON as
# text (its hermes parser); transformers serve parses every reply and answers 500 to the demo model's random one.
from transformers.cli.serving import chat_completion
parse = chat_completion.parse_assistant_message
def as_vllm(processor, model, generated_ids, input_ids, cleaned_content="", tools=None):
    if tools:
        try:
            return parse(processor, model, generated_ids, input_ids, cleaned_content, tools)
        except ValueError:
            pass
    return cleaned_content, None, None
chat_completion.parse_assistant_message = as_vllm
from transformers.cli.transformers import main
sys.argv = ["transformers", "serve", "--host", "127.0.0.1", "--port", port, model]
main()
"""


def vllm_shim(folder: Path) -> Path:
    """`folder`, created, holding the `vllm` command above: put it first on a node's PATH."""
    folder.mkdir()
    (folder / "vllm").write_text(VLLM_SHIM.format(python=sys.executable))
    (folder / "vllm").chmod(0o755)
    return folder


def serve_and_evaluate_the_endpoint(task: dict, env: dict[str, str], tmp_path: Path, outputs: list[str]) -> None:
    shim = vllm_shim(tmp_path / "shim")
    port, args = free_port(), tmp_path / "vllm-args"
    node = {**env, "PATH": f"{shim}:{os.environ['PATH']}", "SHIM_PORT": str(port), "SHIM_ARGS": str(args)}
    full = set_up(task, node, tmp_path / "serve-node", outputs)
    with tempfile.TemporaryFile("w+") as log, background(["bash", "-c", task["run"]], env=full, stdout=log,
                                                         stderr=subprocess.STDOUT) as server:  # fmt: skip
        wait_for_server(f"http://127.0.0.1:{port}/health", server, log)
        laptop = tmp_path / "laptop"
        run = f"s3://{env['BUCKET']}/runs/{env['RUN_NAME']}"
        assert main(["artifacts", "pull", run, "--what", "data", "--out", str(laptop)]) == 0
        # The README's query and its `trainer evaluate --endpoint`, as written but for the address and the run's name.
        readme = {c.argv[0]: c.argv for c in readme_commands() if "$ENDPOINT/" in c.text}
        values = {"$ENDPOINT": f"127.0.0.1:{port}", "$VLLM_API_KEY": env["VLLM_API_KEY"], "chi-v1": env["RUN_NAME"]}

        def as_run_here(argv: list[str]) -> list[str]:
            return [functools.reduce(lambda arg, item: arg.replace(*item), values.items(), arg) for arg in argv]

        query = run_to_end([*as_run_here(readme["curl"]), "--fail", "--silent", "--show-error"], timeout=300)
        assert query.returncode == 0, query.stderr + log_tail(log)
        answer = json.loads(query.stdout)["choices"][0]["message"]
        assert answer["role"] == "assistant" and isinstance(answer["content"], str)
        sets = set_args([f"data.output_dir={laptop}", f"evaluation.output_dir={laptop / 'eval'}"])
        flags = [*sets, "--config", str(PRODUCTION_TINY), "--limit", "2", "--max-new-tokens", "8"]
        with pytest.MonkeyPatch.context() as patch:  # the laptop's environment holds the key, as a user's does
            patch.setenv("VLLM_API_KEY", env["VLLM_API_KEY"])
            assert main([*as_run_here(readme["trainer"])[1:], *flags]) == 0
        log.seek(0)
        outputs.append(log.read())
    assert args.read_text().split() == [
        "serve", "model", "--served-model-name", "demo", "--host", "0.0.0.0", "--port", "8000",
        "--enable-auto-tool-choice", "--tool-call-parser", "hermes", "--generation-config", "vllm",
        "--max-model-len", "8192",
    ]  # fmt: skip
    report = json.loads((tmp_path / "laptop/eval/report.json").read_text())
    assert report["n_examples"] == 2 and report["endpoints"][0]["model"] == "demo"
    assert (tmp_path / "serve-node/model/SHA256SUMS").is_file()  # pulled from the bucket onto the empty machine


@pytest.mark.slow
@pytest.mark.skipif(not CHI.is_dir(), reason="chi's Debian package is missing: run `make go-sources`")
def test_sky_tasks_run_end_to_end_and_the_train_task_resumes_after_a_kill(
    sky_tasks, s3_server, bucket, model_cache, tmp_path
):
    """Which planted secret is really read here: the AWS keys by boto3 against the S3 server (it checks no
    signatures), WANDB_API_KEY by trainer (training.wandb=auto turns W&B on because it is set) and by wandb itself,
    in offline mode so nothing leaves the machine, its files under each workspace and wandb-home, both scanned.
    GITHUB_TOKEN is not: the data comes from EXAMPLES_URI and chi's local folder; that git sends it, and writes it
    nowhere, is tests/test_go_sources.py::test_github_token_is_sent_to_github_as_a_header_and_written_nowhere.
    HF_TOKEN is not either: only huggingface_hub reads it, for a request to the hub, and the hub is offline here
    (the tiny model is built locally), so it is only checked to be written nowhere. VLLM_API_KEY is sent as the Bearer
    key by the README's query and by `trainer evaluate --api-key-env VLLM_API_KEY` to the served model (the stand-in
    for vLLM checks none) and checked to be written nowhere, the report's config included."""
    client = boto3.client("s3")
    for path in SAMPLE_EXAMPLES.glob("*.jsonl"):
        client.upload_file(str(path), bucket, f"examples/{path.name}")
    extra = " ".join(set_args([f"model.cache_dir={model_cache}", "training.max_steps=20", "training.save_steps=10"]))
    wandb_home = {f"WANDB_{kind}_DIR": str(tmp_path / "wandb-home" / kind.lower()) for kind in ("CONFIG", "CACHE")}
    env = {
        "BUCKET": bucket, "RUN_NAME": "demo", "TRAINER_HOME": str(REPO),
        "CONFIG": str(PRODUCTION_TINY.relative_to(REPO)),  # each task on an empty workspace: only the bucket
        "EXAMPLES_URI": f"s3://{bucket}/examples", "SYNTHESIZE": "false", "SKYPILOT_TASK_ID": "sky-managed-1_train",
        "SKYPILOT_NODE_RANK": "0", "SKYPILOT_NODE_IPS": "127.0.0.1", "SKYPILOT_NUM_NODES": "1",
        "SKYPILOT_NUM_GPUS_PER_NODE": "0", "EXTRA_ARGS": extra, "WANDB_MODE": "offline", **wandb_home,
        "WANDB_DATA_DIR": str(tmp_path / "wandb-home" / "data"), **PLANTED_SECRETS,
    }  # fmt: skip
    run, outputs = "runs/demo/", []

    synthesized = run_task(sky_tasks["synthesize.yaml"][0], env, tmp_path / "cpu-node", outputs)
    assert synthesized.returncode == 0, synthesized.stderr[-3000:]
    assert {"data/dataset_dict.json", "data/manifest.json", "data/symbols.jsonl"} <= objects(bucket, run)
    manifest = json.loads(client.get_object(Bucket=bucket, Key=f"{run}data/manifest.json")["Body"].read())
    assert manifest["hand_written"] == 63 and manifest["generated"]["by_source"]["chi"] > 100

    (train,) = sky_tasks["train.yaml"]
    # Killed as soon as checkpoint-10 is wholly in the bucket, while training goes on past it.
    killed = run_task(train, {**env, "TRAINER_KILL_AT": "uploaded:10"}, tmp_path / "spot-1", outputs)
    assert killed.returncode == 128 + 9, killed.stderr[-3000:]
    run_record = json.loads(client.get_object(Bucket=bucket, Key=f"{run}run.json")["Body"].read())
    assert (run_record["status"], run_record["stage"]) == ("failed", "train")
    assert "checkpoints/checkpoint-10/MANIFEST.json" in objects(bucket, run)

    recovered = run_task(train, env, tmp_path / "spot-2", outputs)  # a fresh machine: nothing local
    assert recovered.returncode == 0, recovered.stderr[-3000:]
    train_run = json.loads((tmp_path / "spot-2/outputs/checkpoints/logs/train_run.json").read_text())
    # W&B ran on both machines, as one run: its id comes from SKYPILOT_TASK_ID, which survives the recovery.
    wandb_runs = [[p.name for p in (tmp_path / node / "wandb").glob("offline-run-*")] for node in ("spot-1", "spot-2")]
    assert [[name.endswith("-sky-managed-1_train") for name in names] for names in wandb_runs] == [[True], [True]]
    assert train_run["resumed_from"].endswith("checkpoint-10") and train_run["global_step"] == 20
    run_record = json.loads(client.get_object(Bucket=bucket, Key=f"{run}run.json")["Body"].read())
    assert (run_record["status"], run_record["step"], run_record["run_name"]) == ("complete", 20, "production-tiny")
    report = json.loads(client.get_object(Bucket=bucket, Key=f"{run}eval/report.json")["Body"].read())
    assert run_record["metrics"]["loss"] == report["loss"]
    stored = objects(bucket, run)
    assert {
        "model/SHA256SUMS",
        "model/config.json",
        "model/model.safetensors.index.json",
        "eval/predictions.jsonl",
    } <= stored

    evaluated = run_task(sky_tasks["evaluate.yaml"][0], env, tmp_path / "gpu-node", outputs)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((tmp_path / "gpu-node/outputs/eval/report.json").read_text())["loss"] == report["loss"]

    # A fresh export machine, with GGUF as docs/export.md tells: EXTRA_ARGS as a user sets it.
    client.delete_object(Bucket=bucket, Key=f"{run}model/SHA256SUMS")
    gguf = " ".join(set_args(["export.formats=[safetensors,gguf]", "export.gguf_types=[f16]"]))
    exported = run_task(sky_tasks["export.yaml"][0], {**env, "EXTRA_ARGS": f"{extra} {gguf}"},
                        tmp_path / "export-node", outputs)  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert {"model/SHA256SUMS", "model/model-f16.gguf", "model/model-f16.Modelfile"} <= objects(bucket, run)
    sums = client.get_object(Bucket=bucket, Key=f"{run}model/SHA256SUMS")["Body"].read().decode()
    assert {"model-f16.gguf", "model-f16.Modelfile", "config.json"} <= {line.split()[-1] for line in sums.splitlines()}

    serve_and_evaluate_the_endpoint(sky_tasks["serve.yaml"][0], env, tmp_path, outputs)

    listing = run_to_end([sys.executable, "-m", "trainer.cli", "artifacts", "ls", f"s3://{bucket}/runs/"], timeout=120)
    assert listing.returncode == 0, listing.stderr
    row = listing.stdout.splitlines()[1].split()
    assert row[:3] == ["demo", "complete", "20"] and float(row[3]) == pytest.approx(report["loss"], abs=1e-4)

    # Secrets: no planted value in any file the five machines wrote, any object in the bucket, or any output.
    files = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()]
    blobs = {str(p): p.read_bytes() for p in files}
    blobs |= {
        f"s3://{bucket}/{key}": client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in objects(bucket, "")
    }
    blobs |= {f"task output {i}": text.encode() for i, text in enumerate(outputs)}
    assert len(files) > 100 and len(blobs) > len(files) + 50
    leaks = [
        (where, name)
        for where, blob in blobs.items()
        for name, value in PLANTED_SECRETS.items()
        if value.encode() in blob
    ]
    assert leaks == []


@pytest.mark.slow
@pytest.mark.skipif(not CHI.is_dir(), reason="chi's Debian package is missing: run `make go-sources`")
def test_the_teacher_task_serves_a_model_points_synthesis_at_it_and_stops_it(
    sky_tasks, s3_server, bucket, tiny_model_dir, tmp_path
):
    shims = vllm_shim(tmp_path / "shims")
    port = free_port()
    env = {
        "BUCKET": bucket, "RUN_NAME": "taught", "TRAINER_HOME": str(REPO),
        "CONFIG": str(PRODUCTION_TINY.relative_to(REPO)), "EXTRA_ARGS": "--set data.teacher.max_tokens=16",
        "TEACHER_MODEL": str(tiny_model_dir), "TEACHER_MAX_REQUESTS": "4", "TEACHER_PORT": str(port),
        "TEACHER_WAIT_S": "120", "PATH": f"{shims}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
    }  # fmt: skip
    done = run_task(sky_tasks["synthesize-teacher.yaml"][0], env, tmp_path / "gpu-node", [])
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads(
        boto3.client("s3").get_object(Bucket=bucket, Key="runs/taught/data/manifest.json")["Body"].read()
    )
    teacher = manifest["teacher"]  # the tiny model writes noise: asked, answered, every reply rejected
    assert (teacher["requests"], teacher["failed_requests"], teacher["rejected"]["malformed"]) == (4, 0, 4)
    assert teacher["not_asked"] > 100  # chi's whole API: the budget stopped the rest
    assert teacher["model"] == str(tiny_model_dir) and teacher["tokens"]["completion"] > 0
    assert "no teacher conversation was accepted" in done.stderr
    summary = r"teacher .*: 4 requests, .*\n    accepted 0 .*rejected: malformed 4, .*\n    tokens: prompt \d"
    assert re.search(summary, done.stdout), done.stdout[-2000:]  # the terminal's lines, token counts included
    assert "data/teacher_rejects.jsonl" in objects(bucket, "runs/taught/")
    with socket.socket() as probe:  # the task's exit stopped the server
        assert probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_artifacts_pull_verifies_resumes_and_refuses_escaping_keys(s3_server, bucket, tmp_path, capsys):
    source = tmp_path / "model"
    (source / "sub").mkdir(parents=True)
    for name, text in {"a.txt": "alpha", "sub/b.txt": "beta", "SHA256SUMS": "sums"}.items():
        (source / name).write_text(text)
    uri = f"s3://{bucket}/runs/r1/model"
    assert main(["artifacts", "push", str(source), uri]) == 0
    assert main(["artifacts", "push", str(source), uri]) == 2  # a finished upload is not overwritten
    assert "already holds a finished upload" in capsys.readouterr().err

    out = tmp_path / "pulled"
    assert main(["artifacts", "pull", f"s3://{bucket}/runs/r1", "--what", "model", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"3 downloaded, 0 already present → {out}")
    (out / "a.txt").write_text("tampered")
    (out / "sub/b.txt").unlink()
    assert main(["artifacts", "pull", f"s3://{bucket}/runs/r1", "--what", "model", "--out", str(out)]) == 0
    assert "2 downloaded, 1 already present" in capsys.readouterr().out
    assert (out / "a.txt").read_text() == "alpha" and (out / "sub/b.txt").read_text() == "beta"

    boto3.client("s3").put_object(Bucket=bucket, Key="runs/r2/model/../../x", Body=b"evil")
    boto3.client("s3").put_object(Bucket=bucket, Key="runs/r2/model/ok.txt", Body=b"fine")
    target = tmp_path / "deep" / "er" / "out"
    assert main(["artifacts", "pull", f"s3://{bucket}/runs/r2/model", "--out", str(target)]) == 2
    assert "refusing object key '../../x'" in capsys.readouterr().err
    assert not (tmp_path / "deep" / "x").exists() and not target.exists()  # nothing written at all
    assert main(["artifacts", "pull", f"s3://{bucket}/runs/r1", "--what", "weights", "--out", str(out)]) == 2
    shutil.rmtree(out)


@pytest.mark.slow
def test_a_completed_run_is_never_redone_over_its_artifacts_without_redo(s3_server, bucket, capfd):
    run_uri = f"s3://{bucket}/runs/done"
    update_run(run_uri, run_name="done", status="complete", step=20)
    assert main(["pipeline", "--config", str(DEBUG_CONFIG), "--run-uri", run_uri]) == 2
    refusal = f"{run_uri} is a completed run; use another run name or pass --redo to run it again"
    assert refusal in capfd.readouterr().err
    assert objects(bucket, "runs/done/") == {"run.json"}
    assert read_run(run_uri)["status"] == "complete"
    begin_run(run_uri, "done", redo=True)
    assert read_run(run_uri)["status"] == "running"
