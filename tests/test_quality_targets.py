"""make quality's targets table: the verdicts it writes to docs/quality.md from a report and its predictions."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from quality import model_of, set_aside_stale
from quality_report import building, targets
from quality_runs import CONFIG, RUNS, evaluation_settings, model_settings
from quality_store import keep, take_back, trained_with

from trainer.checkpoints.folder import write_manifest
from trainer.checkpoints.sealed import seal_config
from trainer.config_file import load_config
from trainer.training.resume import DATASET_KEY


def record(group: str, baseline: list[str | None] | None, prediction: list[str | None] | None) -> dict:
    """A predictions.jsonl record: its group and each model's compiler notes (None per block that built)."""
    notes = {model: found for model, found in (("baseline", baseline), ("prediction", prediction)) if found is not None}
    return {"group": group, "compile": notes}


def scores(recall: float, invented: float, general: float) -> dict:
    group = {"api_grounding": {"recall": recall, "invented_rate": invented}, "tool_call": {"call_recall": 1.0}}
    return {"general": {"pass_rate": general}, "groups": {g: group for g in ("seen", "heldout", "howto")}}


def test_building_counts_answers_without_go_as_not_building():
    records = [
        record("seen", None, [None]),  # only the finetuned model writes Go, and it builds
        record("seen", ["undefined: chi.Gzip"], [None, None]),
        record("seen", None, ["undefined: x"]),  # a block that does not build
        record("seen", None, None),  # no Go from either
        record("howto", [None], None),
    ]
    assert building(records, "seen") == (0.0, 0.5)
    assert building(records, "howto") == (1.0, 0.0)
    assert building(records, "heldout") == (None, None)


def test_targets_verdicts_follow_the_figures():
    records = [record("seen", None, [None]), record("howto", [None], ["undefined: y"])]
    report = {**scores(recall=0.30, invented=0.02, general=0.75), "baseline": scores(0.10, 0.02, 0.90)}
    verdicts = {row.split(" | ")[0].lstrip("| "): row.split(" | ")[-1].rstrip(" |") for row in targets(report, records)}
    assert verdicts["seen: API recall ≥ base + 0.20"] == "met"  # 0.1 + 0.2 is 0.30000000000000004 in floats
    assert verdicts["seen: invented-API rate < base"] == "missed (equal)"
    assert verdicts["seen: answers whose Go builds ≥ base, of all rows"] == "met"
    assert verdicts["how-to: answers whose Go builds ≥ base, of all rows"] == "missed by 1.000"
    assert verdicts["compile rate ≥ base, on the 1 rows where both write Go"] == "missed by 1.000"
    assert verdicts["general prompts ≥ base − 0.083 (one prompt)"] == "missed by 0.067"


def test_a_checkpoint_trained_again_at_the_same_path_is_another_model(tmp_path):
    (tmp_path / "adapter_model.safetensors").write_bytes(b"first weights")
    write_manifest(tmp_path)
    first = model_of(tmp_path)
    (tmp_path / "adapter_model.safetensors").write_bytes(b"other weights")
    write_manifest(tmp_path)
    second = model_of(tmp_path)
    assert first["checkpoint"] == second["checkpoint"] == str(tmp_path) and first != second  # its stamp is stale


def test_checkpoints_trained_on_other_data_are_set_aside_and_kept(tmp_path):
    data, checkpoints = tmp_path / "data", tmp_path / "checkpoints"
    data.mkdir()
    (data / "manifest.json").write_text(json.dumps({"content_hash": "a1b2c3d4e5f6-today"}))
    folder = checkpoints / "checkpoint-5"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    config = load_config(CONFIG, (f"data.output_dir={data}", f"training.output_dir={checkpoints}"))
    seal_config(config, folder)  # the config and the data's hash it was trained with, as training seals them
    write_manifest(folder)
    assert set_aside_stale(config) is None and folder.is_dir()  # the same data: resumed or done, not trained again
    (data / "manifest.json").write_text(json.dumps({"content_hash": "ffffffffffff-generator-changed"}))
    assert set_aside_stale(config) == tmp_path / "checkpoints-a1b2c3d4e5f6"
    assert not checkpoints.exists() and (tmp_path / "checkpoints-a1b2c3d4e5f6/checkpoint-5/MANIFEST.json").is_file()
    shutil.copytree(tmp_path / "checkpoints-a1b2c3d4e5f6", checkpoints)  # the same old data trained again
    assert set_aside_stale(config) == tmp_path / "checkpoints-a1b2c3d4e5f6-2"


def test_kept_results_come_back_only_for_the_same_training_data_rows_and_settings(tmp_path):
    report, store, back = tmp_path / "report", tmp_path / "store", tmp_path / "back"
    report.mkdir()
    (report / "report.json").write_text('{"groups": {}}')
    (report / "predictions.jsonl").write_text('{"prediction": "`chi.URLParam`"}\n')
    (report / "metrics.csv").write_text("not read by the report: not kept")
    stamps = {
        "evaluate": {
            "seconds": 9,
            "inputs": {
                "checkpoint": "/elsewhere/checkpoint-901",
                "weights": "w1",
                "dataset_hash": "rows1",
                "evaluation": {"max_new_tokens": 96},
            },
        }
    }
    config = load_config(CONFIG, (f"data.output_dir={tmp_path / 'no-data'}",))
    trained = trained_with(config)
    assert trained["training.seed"] == config.training.seed and "training.output_dir" not in trained
    keep("chi", report, stamps, trained, store)
    kept = (store / "chi.json.gz").read_bytes()
    keep("chi", report, stamps, trained, store)
    assert (store / "chi.json.gz").read_bytes() == kept  # the same results, the same bytes: no diff to commit
    evaluated = {"weights": None, "dataset_hash": "rows1", "evaluation": {"max_new_tokens": 96}}
    assert take_back("chi", back, {**trained, "training.seed": 1}, evaluated, store) is None
    assert take_back("chi", back, {**trained, DATASET_KEY: "other data"}, evaluated, store) is None
    assert take_back("chi", back, trained, {**evaluated, "dataset_hash": "rows2"}, store) is None
    assert take_back("chi", back, trained, {**evaluated, "evaluation": {"max_new_tokens": 64}}, store) is None
    assert take_back("chi", back, trained, {**evaluated, "weights": "w2"}, store) is None  # another model's answers
    assert take_back("gin", back, trained, evaluated, store) is None and not back.exists()
    assert take_back("chi", back, trained, {**evaluated, "weights": "w1"}, store) == stamps
    assert sorted(path.name for path in back.iterdir()) == ["predictions.jsonl", "report.json"]
    assert (back / "predictions.jsonl").read_text() == '{"prediction": "`chi.URLParam`"}\n'


def test_a_run_trains_on_its_own_data_and_answers_the_rows_it_is_told_to():
    def config(settings):
        return load_config(CONFIG, settings)

    before = config(model_settings(CONFIG, RUNS["chi-before"]))  # trained on the mix before the fact kinds
    assert str(before.data.output_dir) == "outputs/quality/chi-before/data" and before.data.generation.mix.usage == 0
    asked = config(evaluation_settings(CONFIG, RUNS["chi-before"]))  # and asked chi's rows, without a base
    assert str(asked.data.output_dir) == "outputs/quality/chi/data" and asked.evaluation.baseline is False
    assert str(asked.training.output_dir) == "outputs/quality/chi-before/checkpoints"
    howto = config(evaluation_settings(CONFIG, RUNS["chi-before-howto"]))  # chi-before's model on chi-howto's rows
    assert str(howto.training.output_dir) == "outputs/quality/chi-before/checkpoints"
    assert str(howto.data.output_dir) == "outputs/quality/chi-howto/data"
    assert str(howto.evaluation.output_dir) == "outputs/quality/chi-before-howto/report"
    chi = config(evaluation_settings(CONFIG, RUNS["chi"]))
    assert str(chi.data.output_dir) == "outputs/quality/chi/data" and chi.evaluation.baseline is True
