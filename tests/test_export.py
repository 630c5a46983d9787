"""The streaming export: exact numerics against PEFT, the NF4 base, the folder's contents, verification, upload."""

import copy
import json
import os
import shutil
import subprocess

import boto3
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.helpers import DEBUG_CONFIG, debug_overrides, set_args
from trainer.cli import main
from trainer.config import TinyModelSpec
from trainer.errors import TrainerError
from trainer.export.export import export_model
from trainer.export.merge import nf4_round_trip, read_adapter_layout, stream_merge
from trainer.export.verify import PROMPTS, merged_model, reference_model, verify_export
from trainer.storage import download_folder, upload_folder
from trainer.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return build_tiny_model(TinyModelSpec(), tmp_path_factory.mktemp("tiny"))


def random_adapter(base_dir, folder, seed=0, **lora):
    """A LoRA adapter with random non-zero B (and biases, when trained), saved by PEFT itself."""
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(target_modules="all-linear", task_type="CAUSAL_LM", **lora))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name or (parameter.requires_grad and name.endswith(".bias")):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    peft_model.save_pretrained(folder)
    return peft_model


@pytest.mark.parametrize(
    "lora",
    [
        {"r": 8, "lora_alpha": 16},
        {"r": 8, "lora_alpha": 16, "use_rslora": True},
        {"r": 4, "lora_alpha": 32, "bias": "all"},
        {"r": 4, "lora_alpha": 8, "bias": "lora_only", "use_rslora": True},
    ],
)
def test_streamed_merge_equals_peft_merge_and_unload(tiny_base, tmp_path, lora):
    peft_model = random_adapter(tiny_base, tmp_path / "adapter", **lora)
    expected = peft_model.merge_and_unload().state_dict()
    out = tmp_path / "merged"
    out.mkdir()
    # Small shards and blocks: several shards and many row blocks per tensor, so both paths are exercised.
    names = stream_merge(
        tiny_base, read_adapter_layout(tmp_path / "adapter"), out, torch.float32, 200_000, block_bytes=3000
    )
    assert len(names) > 1
    merged = {}
    for name in names:
        merged.update(load_file(out / name))
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(merged)
    assert set(expected) - set(merged) <= {"lm_head.weight"} or set(expected) == set(merged)
    for key, tensor in merged.items():
        assert (tensor - expected[key]).abs().max() <= 1e-6, key
    changed = [
        k
        for k in merged
        if k.endswith(".bias") and not torch.equal(merged[k], load_file(next(tiny_base.glob("*.safetensors")))[k])
    ]
    assert bool(changed) == (lora.get("bias", "none") != "none")


def test_unsupported_adapters_are_refused(tiny_base, tmp_path):
    random_adapter(tiny_base, tmp_path / "dora", r=4, lora_alpha=8, use_dora=True)
    with pytest.raises(TrainerError, match=r"does not support.*use_dora"):
        read_adapter_layout(tmp_path / "dora")


@pytest.mark.slow
def test_nf4_base_reproduces_the_trained_qlora_function(pipeline_run, tmp_path):
    """Merged into the NF4 round-trip, the model computes what QLoRA trained; into the original weights it does not."""
    from trainer.model import load_base_model, load_tokenizer

    checkpoint = pipeline_run.training.output_dir / "checkpoint-20"
    tokenizer = load_tokenizer(pipeline_run.model, checkpoint)
    inputs = [
        tokenizer.apply_chat_template(p, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        for p in PROMPTS
    ]
    qlora = PeftModel.from_pretrained(
        load_base_model(pipeline_run.model, torch.float32, quantized=True), str(checkpoint)
    ).eval()
    with torch.no_grad():
        trained = [qlora(**x, use_cache=False).logits for x in inputs]
    distances = {}
    for merge_base in ("nf4", "original"):
        config = pipeline_run.model_copy(
            update={
                "export": pipeline_run.export.model_copy(
                    update={"merge_base": merge_base, "output_dir": tmp_path / merge_base}
                )
            }
        )
        folder = export_model(config, checkpoint)
        merged = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        with torch.no_grad():
            got = [merged(**x, use_cache=False).logits for x in inputs]
        scale = max(float(t.abs().max()) for t in trained)
        distances[merge_base] = max(float((g - t).abs().max()) for g, t in zip(got, trained, strict=True)) / scale
        assert f"into the {merge_base} base weights" in (folder / "README.md").read_text()
    # Measured: 1.5e-6 (float rounding) versus 0.50.
    assert distances["nf4"] < 1e-5, distances
    assert distances["original"] > 0.1, distances


@pytest.mark.slow
def test_nf4_round_trip_is_bitsandbytes_dequantized_weight_exactly(pipeline_run):
    import bitsandbytes.functional as bnb

    from trainer.model import load_base_model

    quantized = load_base_model(pipeline_run.model, torch.float32, quantized=True)
    dense = dict(load_base_model(pipeline_run.model, torch.float32, quantized=False).named_parameters())
    round_trip = nf4_round_trip(pipeline_run.model.quantization, torch.float32)
    layers = [(n, m) for n, m in quantized.named_modules() if type(m).__name__ == "Linear4bit"]
    assert len(layers) == 7 * pipeline_run.model.tiny.num_hidden_layers
    for name, module in layers:
        expected = bnb.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
        assert torch.equal(round_trip(dense[f"{name}.weight"]), expected), name


@pytest.mark.slow
def test_export_folder_has_checksums_card_and_reloads_offline(pipeline_run):
    """The folder alone, hub offline (conftest) and local_files_only: every weight loads from it, and greedy
    generation with the KV cache agrees with a full forward pass over its own output."""
    folder = pipeline_run.export.output_dir / pipeline_run.training.run_name
    check = subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=folder, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    listed = {line.split("  ", 1)[1] for line in (folder / "SHA256SUMS").read_text().splitlines()}
    assert listed == {p.name for p in folder.iterdir()} - {"SHA256SUMS"}
    card = (folder / "README.md").read_text()
    manifest = json.loads((pipeline_run.data.output_dir / "manifest.json").read_text())
    report = json.loads((pipeline_run.evaluation.output_dir / "report.json").read_text())
    assert manifest["content_hash"] in card
    assert f"perplexity {report['perplexity']:.4g}" in card
    assert "verified | max logit difference" in card
    assert "base_model: tiny-qwen2" in card and "license:" in card

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model, loading = AutoModelForCausalLM.from_pretrained(
        folder, local_files_only=True, dtype=torch.float32, output_loading_info=True
    )
    assert {kind: list(keys) for kind, keys in loading.items() if keys} == {}  # nothing missing or initialised anew
    stored = {}
    for shard in folder.glob("model-*.safetensors"):
        stored.update(load_file(shard))
    weights = model.eval().state_dict()
    assert stored.keys() <= weights.keys() and all(torch.equal(weights[k], v) for k, v in stored.items())
    prompt = tokenizer.apply_chat_template(
        PROMPTS[0], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    new_tokens = 8
    with torch.no_grad():
        generated = model.generate(**prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        logits = model(generated).logits
    start = prompt["input_ids"].shape[1]
    assert generated.shape == (1, start + new_tokens)
    assert torch.equal(logits[0, start - 1 : -1].argmax(-1), generated[0, start:])


def merged_folder(base_dir, adapter, out, round_trip=None):
    """`stream_merge` into `out` with the base's config and tokenizer beside the shards: an exported folder."""
    out.mkdir()
    stream_merge(base_dir, adapter, out, torch.float32, 10**9, round_trip)
    for path in base_dir.iterdir():
        if not path.name.startswith("model"):
            shutil.copy2(path, out / path.name)
    return out


@pytest.mark.parametrize(
    ("lora", "nf4"),
    [({"r": 8, "lora_alpha": 16}, False), ({"r": 4, "lora_alpha": 32, "bias": "all"}, False), ({"r": 8}, True)],
)
def test_streamed_models_compute_what_the_loaded_ones_do(tiny_base, tmp_path, lora, nf4):
    """The verification's streamed models equal PEFT / transformers with everything loaded, NF4 base included."""
    from trainer.config import QuantizationSettings
    from trainer.export.merge import quantized_weight_keys

    random_adapter(tiny_base, tmp_path / "adapter", **lora)
    round_trip = nf4_round_trip(QuantizationSettings(), torch.float32) if nf4 else None
    keys = quantized_weight_keys(tiny_base) if nf4 else set()
    folder = merged_folder(tiny_base, read_adapter_layout(tmp_path / "adapter"), tmp_path / "merged", round_trip)
    base = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
    with torch.no_grad():
        for name, parameter in base.named_parameters():
            if name in keys:
                parameter.copy_(round_trip(parameter))
    loaded = {
        "reference": PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval(),
        "merged": AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(),
    }
    cpu = torch.device("cpu")
    streamed = {
        "reference": reference_model(tiny_base, tmp_path / "adapter", round_trip, keys, cpu),
        "merged": merged_model(folder, cpu),
    }
    ids = torch.tensor([[1, 50, 300, 7, 900, 12]])
    for name, model in streamed.items():
        assert {p.device.type for p in model.parameters()} == {"meta"}  # nothing resident between forwards
        with torch.no_grad():
            assert torch.equal(model(input_ids=ids).logits, loaded[name](input_ids=ids).logits), name


def test_streamed_forward_holds_one_module_at_a_time(tiny_base, tmp_path, monkeypatch):
    random_adapter(tiny_base, tmp_path / "adapter", r=8, lora_alpha=16)
    model = reference_model(tiny_base, tmp_path / "adapter", None, set(), torch.device("cpu"))
    held = []
    linear = torch.nn.functional.linear

    def recording_linear(*args, **kwargs):
        held.append(sum(p.numel() for p in model.parameters() if p.device.type != "meta"))
        return linear(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "linear", recording_linear)
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 2, 3]]))
    own = [sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()]
    assert len(held) > 7 * 2 * 3  # every projection's base layer and both LoRA halves ran
    head = model.get_output_embeddings().weight.numel()
    assert max(held) == max(own) == head  # the output head alone, its largest module: 63232 of the model's 244800


@pytest.mark.slow
def test_verification_catches_a_wrong_merge(pipeline_run, tmp_path):
    """A corrupted tensor, a layer left unmerged, a wrong scaling: each fails; the right merge passes."""
    from trainer.export.export import local_base
    from trainer.export.merge import quantized_weight_keys

    checkpoint = pipeline_run.training.output_dir / "checkpoint-20"
    base_dir = local_base(pipeline_run)
    round_trip = nf4_round_trip(pipeline_run.model.quantization, torch.float32)
    keys = quantized_weight_keys(base_dir)
    reference = lambda: reference_model(base_dir, checkpoint, round_trip, keys)  # noqa: E731
    adapter = read_adapter_layout(checkpoint)
    assert verify_export(merged_folder(base_dir, adapter, tmp_path / "right", round_trip), reference, "fp32") < 1e-5

    corrupted = merged_folder(base_dir, adapter, tmp_path / "corrupted", round_trip)
    shard = next(corrupted.glob("model-*.safetensors"))
    tensors = load_file(shard)
    key = next(k for k in tensors if k.endswith("mlp.down_proj.weight"))
    tensors[key] = tensors[key] * 1.5
    save_file(tensors, shard, metadata={"format": "pt"})
    missed = copy.deepcopy(adapter)
    del missed.lora["model.layers.1.self_attn.o_proj.weight"]
    scaled = copy.deepcopy(adapter)
    scaled.scaling *= 2
    wrong = [
        corrupted,
        merged_folder(base_dir, missed, tmp_path / "missed", round_trip),
        merged_folder(base_dir, scaled, tmp_path / "scaled", round_trip),
    ]
    for folder in wrong:
        with pytest.raises(TrainerError, match="export verification failed"):
            verify_export(folder, reference, "fp32")


@pytest.mark.slow
def test_an_export_failing_verification_publishes_and_uploads_nothing(pipeline_run, bucket, tmp_path, monkeypatch):
    from trainer.export import verify

    monkeypatch.setitem(verify.TOLERANCE, "fp32", 0.0)  # float rounding alone (~1e-6) is now a failure
    update = {"output_dir": tmp_path / "models", "upload": f"s3://{bucket}/runs/r/model"}
    config = pipeline_run.model_copy(update={"export": pipeline_run.export.model_copy(update=update)})
    bound = r"by \d\.\d\de-0[67] of the largest logit \(bound for fp32: 0e\+00\); the folder was not published"
    with pytest.raises(TrainerError, match=bound):
        export_model(config, pipeline_run.training.output_dir / "checkpoint-20")
    assert list((tmp_path / "models").iterdir()) == []  # neither the target nor a staging folder
    assert boto3.client("s3").list_objects_v2(Bucket=bucket)["KeyCount"] == 0


@pytest.mark.slow
def test_adapter_only_and_bf16_export(pipeline_run, tmp_path):
    checkpoint = pipeline_run.training.output_dir / "checkpoint-20"
    update = {"adapter_only": True, "output_dir": tmp_path}
    config = pipeline_run.model_copy(update={"export": pipeline_run.export.model_copy(update=update)})
    folder = export_model(config, checkpoint)
    assert folder.name == "tiny-debug-adapter"
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "SHA256SUMS"} <= {
        p.name for p in folder.iterdir()
    }
    assert (
        load_file(folder / "adapter_model.safetensors").keys()
        == load_file(checkpoint / "adapter_model.safetensors").keys()
    )

    config = pipeline_run.model_copy(
        update={"export": pipeline_run.export.model_copy(update={"dtype": "bf16", "output_dir": tmp_path / "bf16"})}
    )
    folder = export_model(config, checkpoint)
    assert {t.dtype for t in load_file(next(folder.glob("model-*.safetensors"))).values()} == {torch.bfloat16}
    assert json.loads((folder / "config.json").read_text())["dtype"] == "bfloat16"


@pytest.mark.slow
def test_upload_then_download_round_trip_with_checksums(pipeline_run, bucket, tmp_path):
    folder = pipeline_run.export.output_dir / pipeline_run.training.run_name
    uri = f"s3://{bucket}/runs/tiny"
    keys = upload_folder(folder, uri)
    assert keys[-1] == "runs/tiny/SHA256SUMS" and len(keys) == len(list(folder.iterdir()))
    client = boto3.client("s3")
    head = client.head_object(Bucket=bucket, Key="runs/tiny/config.json")
    from trainer.storage import sha256_file

    assert head["Metadata"]["sha256"] == sha256_file(folder / "config.json")
    with pytest.raises(TrainerError, match="already holds a finished upload"):
        upload_folder(folder, uri)
    upload_folder(folder, uri, force=True)

    files = download_folder(uri, tmp_path / "down").downloaded
    assert sorted(p.name for p in files) == sorted(p.name for p in folder.iterdir())
    assert (tmp_path / "down" / "config.json").read_bytes() == (folder / "config.json").read_bytes()

    # An object whose bytes no longer match its recorded sha256 is refused, and nothing half-written is left.
    client.put_object(Bucket=bucket, Key="runs/tiny/config.json", Body=b"{}", Metadata=head["Metadata"])
    with pytest.raises(TrainerError, match="sha256 does not match"):
        download_folder(uri, tmp_path / "again")
    assert not (tmp_path / "again" / "config.json").exists()


def test_a_file_over_the_multipart_threshold_goes_up_and_down_in_parts_with_its_sha256(bucket, tmp_path):
    from trainer.storage import sha256_file

    folder = tmp_path / "model"
    folder.mkdir()
    big = folder / "model-00001-of-00001.safetensors"
    big.write_bytes(os.urandom(65 * 2**20))  # over the 64 MiB threshold: two 64 MiB-chunked parts
    (folder / "SHA256SUMS").write_text("sums\n")
    upload_folder(folder, f"s3://{bucket}/big")
    head = boto3.client("s3").head_object(Bucket=bucket, Key=f"big/{big.name}")
    assert head["ETag"].strip('"').endswith("-2")  # S3's multipart ETag: digest of the part digests, "-parts"
    assert head["ContentLength"] == 65 * 2**20
    assert head["Metadata"]["sha256"] == sha256_file(big)

    downloaded = download_folder(f"s3://{bucket}/big", tmp_path / "down").downloaded
    assert sorted(p.name for p in downloaded) == ["SHA256SUMS", big.name]
    assert sha256_file(tmp_path / "down" / big.name) == sha256_file(big)


def test_download_refuses_keys_that_escape_the_destination(bucket, tmp_path):
    boto3.client("s3").put_object(Bucket=bucket, Key="runs/x/../../../escape.txt", Body=b"x")
    with pytest.raises(TrainerError, match="escapes the destination"):
        download_folder(f"s3://{bucket}/runs/x", tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists()


@pytest.mark.slow
def test_export_cli_uploads(pipeline_run, bucket, tmp_path):
    """Into its own folder (`--out`): the session's verified export stays as the other tests read it."""
    root = pipeline_run.data.output_dir.parent
    args = ["export", "--config", str(DEBUG_CONFIG), "--no-verify", "--upload", f"s3://{bucket}/model"]
    args += ["--out", str(tmp_path / "model"), *set_args(debug_overrides(root, pipeline_run.model.cache_dir))]
    assert main(args) == 0
    listed = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix="model/")["Contents"]
    assert {o["Key"] for o in listed} == {f"model/{p.name}" for p in (tmp_path / "model").iterdir()}
    assert "verified" not in (tmp_path / "model" / "README.md").read_text()
    assert "verified | max logit difference" in (root / "models" / "tiny-debug" / "README.md").read_text()
