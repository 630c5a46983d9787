"""The debug pipeline (QLoRA on the tiny model) run once through the CLI; these tests read what it wrote."""

import importlib.util
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers import CHI, DEBUG_CONFIG, debug_overrides, set_args
from trainer.api_index import go_blocks
from trainer.cli import main
from trainer.evaluation.metrics import GROUPS
from trainer.export.merge import ADAPTER_WEIGHTS, nf4_round_trip, quantized_weight_keys
from trainer.export.verify import reference_model
from trainer.model import base_model_path
from trainer.tiny_model import QWEN25_TEMPLATE

pytestmark = pytest.mark.slow  # every test reads the session's debug pipeline run

PROMPTS = [
    [{"role": "user", "content": "How do I create a chi router?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What does r.Mount do?"}],
]


def exported_folder(config):
    return config.export.output_dir / config.training.run_name


def test_export_writes_a_self_contained_safetensors_folder(pipeline_run):
    folder = exported_folder(pipeline_run)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert any(n.endswith(".safetensors") for n in names)
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    model_config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in model_config
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert tokenizer.chat_template == QWEN25_TEMPLATE.read_text()  # the inference template, not the masked one


def test_merged_logits_equal_base_plus_adapter(pipeline_run):
    """After QLoRA the default merge base is the NF4 round-trip; PEFT applies the same adapter to that base."""
    folder = exported_folder(pipeline_run)
    checkpoint = pipeline_run.training.output_dir / "checkpoint-20"
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    merged = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32).eval()
    base_dir = Path(base_model_path(pipeline_run.model))
    round_trip = nf4_round_trip(pipeline_run.model.quantization, torch.float32)
    adapted = reference_model(base_dir, checkpoint, round_trip, quantized_weight_keys(base_dir), torch.device("cpu"))
    lora_b = [t for k, t in load_file(checkpoint / ADAPTER_WEIGHTS).items() if "lora_B" in k]
    assert any(t.abs().max() > 0 for t in lora_b), "the adapter must have trained, or this test proves nothing"
    with torch.no_grad():
        for prompt in PROMPTS:
            ids = tokenizer.apply_chat_template(
                prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            expected = adapted(**ids).logits
            got = merged(**ids).logits
            assert got.shape == expected.shape
            assert (got - expected).abs().max() <= 1e-4


def test_evaluation_report_and_predictions(pipeline_run):
    out = pipeline_run.evaluation.output_dir
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((pipeline_run.data.output_dir / "manifest.json").read_text())
    assert report["n_examples"] == manifest["counts"]["test"]
    assert report["dataset_hash"] == manifest["content_hash"]
    assert math.isclose(report["perplexity"], math.exp(report["loss"]), rel_tol=1e-12)
    assert 0 <= report["token_accuracy"] <= 1 and 0 <= report["exact_match"] <= 1
    for key in ("rougeL", "chrf"):
        assert 0 <= report[key] <= 1
    assert set(report["tool_call"]) == {
        "call_rate", "call_recall", "call_references", "wellformed_rate", "name_accuracy", "args_exact",
        "false_call_rate",
    }  # fmt: skip
    assert report["api_grounding"]["mentions"] >= 0 and isinstance(report["api_grounding"]["invented"], list)
    # --baseline: the base model on the same prompts; the delta is finetuned minus base, metric by metric.
    assert report["baseline"]["n_examples"] == report["n_examples"]
    assert report["delta"]["loss"] == pytest.approx(report["loss"] - report["baseline"]["loss"])
    assert report["loss"] < report["baseline"]["loss"]  # the adapter learned something about the test answers
    # Every metric over all test conversations and over each symbol group, teacher-forced ones included.
    groups = report["groups"]
    assert sum(groups[g]["n_examples"] for g in GROUPS) == report["n_examples"]
    assert groups["seen"]["n_examples"] >= 100 or not groups["heldout"]["n_examples"]  # chi's probes, or no chi
    markdown = (out / "report.md").read_text()

    def cells(scores: dict) -> list[str]:
        values = [scores["loss"], *(scores["groups"][g]["loss"] for g in GROUPS)]
        return ["—" if value is None else f"{value:.4f}" for value in values]

    row = [*cells(report), *cells(report["baseline"]), f"{report['delta']['loss']:+.4f}"]
    assert f"| loss (lower is better) | {' | '.join(row)} |" in markdown
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG" and (out / "metrics.png").is_file()
    records = [json.loads(line) for line in (out / "predictions.jsonl").open()]
    assert len(records) == report["n_examples"]
    for record in records:
        assert set(record) - {"compile"} == {"id", "group", "messages", "reference", "prediction", "baseline"}
        for model, notes in record.get("compile", {}).items():  # one entry per fenced Go block of that answer
            assert len(notes) == len(go_blocks(record[model]["content"])) > 0
    # The shipped general prompts, answered by both models; the Go answers compiled where chi's folder is here.
    general = [json.loads(line) for line in (out / "general.jsonl").open()]
    assert report["general"]["n_examples"] == report["baseline"]["general"]["n_examples"] == len(general) >= 10
    assert report["general"]["pass_rate"] == sum(g["prediction_passed"] for g in general) / len(general)
    assert "baseline_passed" in general[0] and "general.pass_rate" in report["delta"]
    with_code = report["go_code"]["answers_with_code"]
    assert (report["go_code"]["compile_rate"] is None) == (with_code == 0 or not shutil.which("go"))
    if CHI.is_dir():  # chi's API index: the references name its API
        assert report["api_grounding"]["recall_references"] > 0 and 0 <= report["api_grounding"]["recall"] <= 1
        assert record["reference"]["role"] == record["prediction"]["role"] == "assistant"
        assert record["messages"][-1]["role"] in ("user", "tool")


def test_every_stage_saves_the_resolved_config(pipeline_run):
    for path in (
        pipeline_run.data.output_dir / "resolved_config.yaml",
        pipeline_run.training.output_dir / "checkpoint-20" / "trainer_config.yaml",  # sealed into the checkpoint
        pipeline_run.evaluation.output_dir / "resolved_config.yaml",
        exported_folder(pipeline_run) / "trainer_config.yaml",
    ):
        assert f"cache_dir: {pipeline_run.model.cache_dir}" in path.read_text()


def test_training_log_has_every_logged_step_once(pipeline_run):
    logs = pipeline_run.training.logging_dir
    steps = [r["step"] for r in map(json.loads, (logs / "metrics.jsonl").open()) if "loss" in r]
    every = pipeline_run.training.logging_steps
    assert steps == list(range(every, 21, every))
    run = json.loads((logs / "train_run.json").read_text())
    assert run["global_step"] == 20 and run["data"]["train"]["supervised_tokens"] > 0


def _evaluate_cli(pipeline_run, out: Path, *flags: str) -> int:
    """`trainer evaluate` on the shared debug run's folders, its report into `out`."""
    root = pipeline_run.data.output_dir.parent
    args = ["evaluate", "--config", str(DEBUG_CONFIG), "--out", str(out), *flags]
    return main([*args, *set_args(debug_overrides(root, pipeline_run.model.cache_dir))])


def test_evaluate_flags_limit_the_run(pipeline_run, tmp_path):
    assert _evaluate_cli(pipeline_run, tmp_path, "--limit", "1", "--max-new-tokens", "3") == 0
    assert json.loads((tmp_path / "report.json").read_text())["n_examples"] == 1
    assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 1
    assert "max_new_tokens: 3\n" in (tmp_path / "resolved_config.yaml").read_text()


def test_a_limited_run_without_teacher_forcing_scores_every_group_on_generations_alone(pipeline_run, tmp_path):
    flags = ("--limit", "3", "--max-new-tokens", "3", "--set", "evaluation.teacher_forced=false")
    assert _evaluate_cli(pipeline_run, tmp_path, *flags) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    groups = {name: report["groups"][name]["n_examples"] for name in GROUPS}
    assert groups == ({"seen": 1, "heldout": 1, "howto": 1} if CHI.is_dir() else {"seen": 0, "heldout": 0, "howto": 3})
    assert report["loss"] is None and all(report["groups"][g]["loss"] is None for g in GROUPS)
    assert report["exact_match"] is not None  # generation metrics still measured
    markdown = (tmp_path / "report.md").read_text()
    assert "| loss (lower is better) | — (predictions scored without a model, or evaluation.teacher_forced" in markdown


@pytest.mark.parametrize("which", ["exported", "base"])
def test_evaluate_an_exported_folder_or_the_bare_base(pipeline_run, tmp_path, which):
    model = str(exported_folder(pipeline_run)) if which == "exported" else "base"
    assert _evaluate_cli(pipeline_run, tmp_path, "--model", model, "--max-new-tokens", "4") == 0
    report = json.loads((tmp_path / "report.json").read_text())
    trained = json.loads((pipeline_run.evaluation.output_dir / "report.json").read_text())
    # The merged folder is the trained function (merged into the NF4 round trip); `base` is the baseline's model.
    expected = trained["loss"] if which == "exported" else trained["baseline"]["loss"]
    assert report["checkpoint"] == model
    assert report["loss"] == pytest.approx(expected, rel=1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on a machine without CUDA")
def test_the_vllm_backend_is_refused_here_and_auto_uses_transformers(pipeline_run, tmp_path, capsys):
    assert _evaluate_cli(pipeline_run, tmp_path / "vllm", "--backend", "vllm") == 2
    assert "error: evaluation.backend=vllm: needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "vllm").exists()  # refused before any model was loaded or file written
    assert _evaluate_cli(pipeline_run, tmp_path / "auto", *set_args(["evaluation.backend=auto"]), "--limit", "2") == 0
    assert json.loads((tmp_path / "auto" / "report.json").read_text())["generation_backend"] == "transformers"


@pytest.mark.skipif(not (torch.cuda.is_available() and importlib.util.find_spec("vllm")), reason="needs CUDA and vllm")
def test_vllm_answers_like_transformers(pipeline_run, tmp_path):
    flags = ("--baseline", *set_args(["model.quantization=null", "training.precision=fp32"]))
    answers = {}
    for backend in ("transformers", "vllm"):
        assert _evaluate_cli(pipeline_run, tmp_path / backend, *flags, "--backend", backend) == 0
        report = json.loads((tmp_path / backend / "report.json").read_text())
        assert report["generation_backend"] == backend and "baseline" in report
        lines = (tmp_path / backend / "predictions.jsonl").read_text().splitlines()
        answers[backend] = [(r["prediction"], r["baseline"]) for r in map(json.loads, lines)]
    same = sum(a == b for a, b in zip(answers["transformers"], answers["vllm"], strict=True))
    assert same >= 0.9 * len(answers["vllm"]), (same, len(answers["vllm"]))


def test_cards_and_report_describe_the_checkpoint_they_belong_to(pipeline_run, tmp_path):
    """A report plots its checkpoint's own run up to its step; checkpoint and export cards say what was trained."""
    checkpoint = pipeline_run.training.output_dir / "checkpoint-10"
    assert (
        _evaluate_cli(pipeline_run, tmp_path, "--checkpoint", str(checkpoint), "--limit", "1", "--max-new-tokens", "3")
        == 0
    )
    steps = [r["step"] for r in map(json.loads, (checkpoint / "metrics.jsonl").open())]
    assert steps[-1] == 10
    report = (tmp_path / "report.md").read_text()
    assert f"Training curve: `{checkpoint / 'metrics.jsonl'}`, steps {steps[0]}–10." in report

    manifest = json.loads((pipeline_run.data.output_dir / "manifest.json").read_text())
    card = (checkpoint / "README.md").read_text()
    assert f"content hash `{manifest['content_hash']}`" in card and "| steps | 10 of 20 |" in card
    assert "| training loss | " in card and "AutoPeftModelForCausalLM.from_pretrained" in card
    assert "[None]" not in card and "{'" not in card
    newest = (pipeline_run.training.output_dir / "checkpoint-20" / "README.md").read_text()
    assert (pipeline_run.training.output_dir / "README.md").read_text() == newest  # not TRL's placeholder

    exported = (exported_folder(pipeline_run) / "README.md").read_text()
    assert "AutoModelForCausalLM.from_pretrained" in exported and "| steps | 20 of 20 |" in exported
    assert "{'" not in exported and f"content hash `{manifest['content_hash']}`" in exported
