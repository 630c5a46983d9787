import itertools
import json
import sys

import pytest
import torch

from trainer.dataset import load_processed
from trainer.errors import TrainerError
from trainer.evaluation.evaluate import teacher_forced
from trainer.synthesis.synthesize import synthesize
from trainer.tokenize import IGNORE_INDEX
from trainer.training.train import build_trainer, train, wandb_env


# Differences relative to the largest logit. fp32 LoRA is exact to float rounding (measured 3e-6); bitsandbytes' CPU
# 4-bit kernel rounds differently for different row counts (measured 2e-3). Attention leaking across packed
# conversations moves logits by the order of the logits themselves (the control below).
@pytest.mark.slow
@pytest.mark.parametrize(("quantization", "rtol"), [("null", 1e-5), ("{quant_type: nf4, compute_dtype: fp32}", 1e-2)])
def test_packed_batch_logits_equal_each_conversation_alone(make_config, quantization, rtol):
    """TRL's BFD packing + the model call as TRL makes it: packed conversations must not see each other."""
    config = make_config(
        "training.per_device_train_batch_size=4",
        "training.max_length=1024",
        f"model.quantization={quantization}",
        "training.packing=true",
    )
    synthesize(config)
    trainer, _ = build_trainer(config)
    model = trainer.model.eval()
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch  # padding-free: sequence boundaries come from position_ids
    starts = [*(batch["position_ids"][0] == 0).nonzero().flatten().tolist(), batch["input_ids"].shape[1]]
    assert len(starts) > 3, "the batch should pack several conversations"
    with torch.no_grad():
        packed = model(**{**batch, "labels": None}, use_cache=False).logits[0]
        scale = packed.abs().max()
        for start, end in itertools.pairwise(starts):
            alone = model(input_ids=batch["input_ids"][:, start:end], use_cache=False).logits[0]
            assert (packed[start:end] - alone).abs().max() <= 1e-5 * scale, (start, end)
        # Control: the same rows without per-conversation positions do leak, so this test can fail.
        leaked = model(input_ids=batch["input_ids"], use_cache=False).logits[0]
        start, end = starts[1], starts[2]
        alone = model(input_ids=batch["input_ids"][:, start:end], use_cache=False).logits[0]
        assert (leaked[start:end] - alone).abs().max() > 0.1 * scale


@pytest.mark.slow
def test_training_learns_a_small_memorisation_set(make_config, examples_dir):
    """Assistant-token loss must fall far: a broken mask, a frozen adapter or a wrong learning rate fails this."""
    answers = ["chi.NewRouter returns a *Mux.", "Use chi.URLParam(r, key).", "Call r.Use before routes.", "r.Mount."]
    lines = [
        json.dumps({"messages": [{"role": "user", "content": f"Q{i}?"}, {"role": "assistant", "content": a}]})
        for i, a in enumerate(answers)
    ]
    (examples_dir / "mem.jsonl").write_text("\n".join(lines) + "\n")
    config = make_config(
        "data.validation_fraction=0",
        "data.test_fraction=0",
        "training.max_steps=60",
        "training.save_steps=60",
        "training.learning_rate=1e-2",
        "training.logging_steps=10",
        examples=examples_dir,
    )
    synthesize(config)
    trainer, _ = build_trainer(config)
    rows = list(load_processed(config.data.output_dir)["train"])
    before = teacher_forced(trainer.model.eval(), trainer.processing_class, rows)["all"]["loss"]
    trainer.train()
    after = teacher_forced(trainer.model.eval(), trainer.processing_class, rows)["all"]["loss"]
    assert after < 0.25 * before, (before, after)
    trainable = [p for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, p in trainer.model.named_parameters() if p.requires_grad)


@pytest.mark.slow
def test_resume_auto_continues_from_the_latest_checkpoint_and_never_starts_fresh(make_config):
    config = make_config("training.max_steps=6", "training.save_steps=4", "training.logging_steps=1")
    synthesize(config)
    first = train(config)
    assert first.final_checkpoint.name == "checkpoint-6"
    longer = make_config("training.max_steps=9", "training.save_steps=4", "training.logging_steps=1")
    train(longer)
    run = json.loads((config.training.logging_dir / "train_run.json").read_text())
    assert run["resumed_from"].endswith("checkpoint-6") and run["global_step"] == 9
    steps = [r["step"] for r in map(json.loads, (config.training.logging_dir / "metrics.jsonl").open()) if "loss" in r]
    assert steps == list(range(1, 10))

    fresh = make_config("training.max_steps=3", "training.save_steps=3", "training.resume=never")
    train(fresh)
    assert sorted(p.name for p in config.training.output_dir.glob("checkpoint-*")) == ["checkpoint-3"]


def test_resume_from_a_path_that_is_not_a_checkpoint_is_an_error(make_config, tmp_path):
    config = make_config(f"training.resume={tmp_path}")
    synthesize(config)
    with pytest.raises(TrainerError, match="is not a checkpoint folder"):
        train(config)


def test_a_batch_without_supervised_tokens_is_refused(make_config):
    config = make_config("training.max_steps=1")
    synthesize(config)
    trainer, _ = build_trainer(config)
    batch = next(iter(trainer.get_train_dataloader()))
    batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)
    with pytest.raises(TrainerError, match="a batch has no supervised"):
        trainer.compute_loss(trainer.model, batch)


def test_wandb_is_on_only_when_asked_or_keyed_and_keeps_one_run_id_across_restarts(make_config):
    training = make_config().training
    assert wandb_env(training, {}) == {}
    assert wandb_env(training.model_copy(update={"wandb": False}), {"WANDB_API_KEY": "k"}) == {}
    env = wandb_env(training, {"WANDB_API_KEY": "k", "SKYPILOT_TASK_ID": "sky-2026/managed:7"})
    assert env == {"WANDB_PROJECT": "trainer", "WANDB_RUN_ID": "sky-2026-managed-7", "WANDB_RESUME": "allow"}
    assert wandb_env(training.model_copy(update={"wandb": True}), {})["WANDB_RUN_ID"] == training.run_name


def test_wandb_true_without_the_package_is_a_clear_error(make_config, monkeypatch):
    """The dev extra installs wandb; None in sys.modules is Python's own mark of a package that cannot be imported
    (importlib.util.find_spec returns None for it)."""
    monkeypatch.setitem(sys.modules, "wandb", None)
    config = make_config("training.wandb=true", "training.max_steps=1")
    synthesize(config)
    with pytest.raises(TrainerError, match="wandb is not installed"):
        build_trainer(config)


@pytest.mark.slow
def test_generation_metrics_are_logged_at_each_evaluation(make_config):
    config = make_config(
        "training.max_steps=4", "training.save_steps=2", "training.eval_generation_samples=2",
        "evaluation.max_new_tokens=4",
    )  # fmt: skip
    synthesize(config)
    train(config)
    log = config.training.logging_dir / "metrics.jsonl"
    generated = [r for r in map(json.loads, log.read_text().splitlines()) if "eval_gen_rougeL" in r]
    assert [r["step"] for r in generated] == [2, 4]
    assert all(0 <= r["eval_gen_rougeL"] <= 1 and 0 <= r["eval_gen_chrf"] <= 1 for r in generated)
    assert {"eval_gen_name_accuracy", "eval_gen_grounded_rate"} <= set(generated[0])


@pytest.mark.parametrize("grouped", [True, False])
def test_batches_cover_every_conversation_once_and_length_grouping_cuts_padding(make_config, grouped):
    config = make_config("training.max_steps=1", f"training.group_by_length={grouped}", "model.quantization=null")
    synthesize(config)
    trainer, _ = build_trainer(config)
    loader = trainer.get_train_dataloader()
    order = list(loader.sampler)
    assert sorted(order) == list(range(len(trainer.train_dataset)))  # each conversation once an epoch
    batches = list(loader)
    padded = sum(int((b["attention_mask"] == 0).sum()) for b in batches)
    share = padded / sum(b["attention_mask"].numel() for b in batches)
    # Sample set, batch 2: neighbours in length pad little; random pairs pad a lot (the stock recipe's way).
    assert share < 0.05 if grouped else share > 0.15, share


@pytest.mark.slow
def test_resume_applies_changed_step_intervals_and_refuses_what_cannot_change_mid_run(make_config, capsys, sample_copy):
    config = make_config("training.max_steps=4", "training.save_steps=4", "training.logging_steps=4")
    synthesize(config)
    train(config)
    capsys.readouterr()

    with pytest.raises(TrainerError) as refused:
        train(make_config("training.max_steps=6", "model.lora.r=8", "training.learning_rate=0.1"))
    checkpoint = config.training.output_dir / "checkpoint-4"
    assert str(refused.value) == (
        f"cannot resume from {checkpoint}: changed since it was trained, and fixed for a run: "
        "model.lora.r 16 → 8; training.learning_rate 0.005 → 0.1. Put them back to resume, or --set "
        "training.resume=never to start over (it removes the earlier checkpoints)"
    )

    # transformers would keep the first run's intervals from trainer_state.json: every 4 steps, so none of 5 and 6
    train(make_config("training.max_steps=6", "training.save_steps=1", "training.logging_steps=1"))
    assert f"resuming from {checkpoint} with the config's " in capsys.readouterr().out
    assert {"checkpoint-5", "checkpoint-6"} <= {p.name for p in config.training.output_dir.glob("checkpoint-*")}
    logged = [r["step"] for r in map(json.loads, (config.training.logging_dir / "metrics.jsonl").open()) if "loss" in r]
    assert logged == [4, 5, 6]

    (sample_copy / "more.jsonl").write_text(
        json.dumps({"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]})
        + "\n"
    )
    changed_data = make_config("training.max_steps=8", "training.save_steps=1", examples=sample_copy)
    synthesize(changed_data)
    with pytest.raises(TrainerError, match=r"fixed for a run: dataset content hash '[0-9a-f]+' → '[0-9a-f]+'\."):
        train(changed_data)


@pytest.mark.slow
def test_train_prints_json_lines_of_numbers_and_short_summaries_in_a_log(make_config):
    from tests.helpers import train_process

    config = make_config("training.max_steps=2", "training.save_steps=2", "training.max_length=200")
    synthesize(config)
    result = train_process(config, "training.max_steps=2", "training.max_length=200")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"train: metrics log (JSON lines) → {config.training.logging_dir / 'metrics.jsonl'}"
    assert all(line.strip() for line in lines) and "\r" not in result.stdout + result.stderr  # no bars in a log
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2]
    assert all(isinstance(value, int | float) for record in logged for value in record.values())
    summary = next(line for line in lines if line.startswith("train: ") and "conversations" in line)
    full_list = config.training.logging_dir / "train_run.json"
    assert summary.endswith(f" (all in {full_list})") and ", e.g. " in summary and len(summary) < 300
    assert len(json.loads(full_list.read_text())["data"]["train"]["truncated"]) > 3
