"""GGUF export: each file read back by transformers' GGUF reader (logits, greedy answers, tokenizer round trip).
The Ollama Modelfile beside each file: tests/test_ollama.py."""

import json
import shutil
import subprocess

import gguf
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from trainer.config import TinyModelSpec
from trainer.errors import TrainerError
from trainer.export import gguf_tokenizer
from trainer.export.gguf_export import stop_ids
from trainer.export.gguf_file import GGUF_TYPES, family_of, permute_rows, write_gguf
from trainer.export.gguf_tokenizer import pre_tokenizer_name
from trainer.export.gguf_verify import GGUF_TOLERANCE, ROUND_TRIP_TEXTS, gguf_model, round_trip_mismatches
from trainer.export.ollama import write_modelfile
from trainer.export.verify import PROMPTS, prompt_batch, prompt_logits, relative_difference
from trainer.tiny_model import build_tiny_model

# SmolLM2-135M-Instruct's chat template: ChatML with a default system prompt, as the tiny Llama's.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def qwen2(tiny_model_dir, tmp_path_factory):
    """The tiny Qwen2 model as an exported (merged) folder."""
    folder = tmp_path_factory.mktemp("qwen2") / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder


@pytest.fixture(scope="module")
def llama(qwen2, tmp_path_factory):
    """A tiny Llama (SmolLM2's shape in miniature: tied embeddings, 3 query heads per key head) with a GPT-2-split
    tokenizer and SmolLM2's chat template."""
    folder = tmp_path_factory.mktemp("llama") / "model"
    tokenizer = AutoTokenizer.from_pretrained(qwen2)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=96,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=0.2,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.chat_template = SMOLLM2_TEMPLATE
    tokenizer.save_pretrained(folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    settings |= {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": False}  # as SmolLM2 converted from GGUF
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return folder


@pytest.mark.slow
def test_gguf_types_read_back_by_transformers_within_their_tolerance(qwen2):
    """transformers' own `from_pretrained(gguf_file=)` against the merged safetensors; the export's streamed reading
    of the file equals it exactly; norms stay F32, matrices take the type."""
    batch = prompt_batch(qwen2)
    cpu = torch.device("cpu")
    merged = AutoModelForCausalLM.from_pretrained(qwen2, dtype=torch.float32).eval()
    expected = prompt_logits(merged, batch, cpu)
    measured = {}
    for gguf_type in ("f16", "bf16", "q8_0", "q4_0"):
        path = write_gguf(qwen2, gguf_type, "tiny")
        loaded = AutoModelForCausalLM.from_pretrained(qwen2, gguf_file=path.name, dtype=torch.float32).eval()
        got = prompt_logits(loaded, batch, cpu)
        measured[gguf_type] = relative_difference(got, expected)
        assert measured[gguf_type] <= (GGUF_TOLERANCE[gguf_type] or 1.0), (gguf_type, measured)
        streamed = prompt_logits(gguf_model(path, cpu), batch, cpu)
        assert all(torch.equal(a, b) for a, b in zip(got, streamed, strict=True)), gguf_type
        types = {t.name: t.tensor_type for t in gguf.GGUFReader(path).tensors}
        assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
        assert types["blk.0.attn_q.bias"] == gguf.GGMLQuantizationType.F32
        assert types["blk.1.ffn_down.weight"] == GGUF_TYPES[gguf_type].weights
        assert types["output.weight"] == GGUF_TYPES[gguf_type].head
    # Measured on the tiny model: f16 3.7e-3, bf16 2.0e-2, q8_0 7.4e-2, q4_0 0.73 (its random weights are extreme).
    assert measured["f16"] < measured["q8_0"] < measured["q4_0"], measured


@pytest.mark.slow
def test_f16_gguf_answers_greedily_like_the_merged_model(qwen2):
    path = write_gguf(qwen2, "f16", "tiny")
    tokenizer = AutoTokenizer.from_pretrained(qwen2)
    merged = AutoModelForCausalLM.from_pretrained(qwen2, dtype=torch.float32).eval()
    loaded = AutoModelForCausalLM.from_pretrained(qwen2, gguf_file=path.name, dtype=torch.float32).eval()
    for prompt in PROMPTS:
        inputs = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        answers = [
            model.generate(**inputs, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            for model in (merged, loaded)
        ]
        assert torch.equal(*answers), prompt


@pytest.mark.slow
def test_llama_query_and_key_rows_are_permuted_as_llama_cpp_reads_them(llama):
    path = write_gguf(llama, "f16", "tiny-llama")
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    assert "output.weight" not in tensors  # tied: llama.cpp and transformers read the embedding
    hf = load_file(llama / "model.safetensors")
    query = torch.from_numpy(tensors["blk.0.attn_q.weight"].data.copy()).float()
    key = torch.from_numpy(tensors["blk.0.attn_k.weight"].data.copy()).float()
    expected_query = permute_rows(hf["model.layers.0.self_attn.q_proj.weight"], 6).half().float()
    assert torch.equal(query, expected_query)
    assert torch.equal(key, permute_rows(hf["model.layers.0.self_attn.k_proj.weight"], 2).half().float())
    assert not torch.equal(query, hf["model.layers.0.self_attn.q_proj.weight"].half().float())
    batch = prompt_batch(llama)
    cpu = torch.device("cpu")
    merged = prompt_logits(AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32).eval(), batch, cpu)
    loaded = AutoModelForCausalLM.from_pretrained(llama, gguf_file=path.name, dtype=torch.float32).eval()
    assert relative_difference(prompt_logits(loaded, batch, cpu), merged) <= GGUF_TOLERANCE["f16"]


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_tokenizer_round_trip_encodes_200_texts_to_the_same_ids(family, request):
    folder = request.getfixturevalue(family)
    path = write_gguf(folder, "q8_0", family)
    assert len(ROUND_TRIP_TEXTS) == len(set(ROUND_TRIP_TEXTS)) == 200
    assert round_trip_mismatches(folder, path.name) == []
    fields = gguf.GGUFReader(path).fields
    assert fields["tokenizer.ggml.pre"].contents() == {"qwen2": "qwen2", "llama": "gpt-2"}[family]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert fields["tokenizer.ggml.eot_token_id"].contents() == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert fields["tokenizer.ggml.eos_token_id"].contents() == tokenizer.eos_token_id
    assert fields["tokenizer.chat_template"].contents() == tokenizer.chat_template
    types = fields["tokenizer.ggml.token_type"].contents()
    tokens = fields["tokenizer.ggml.tokens"].contents()
    assert types[tokens.index("<|im_start|>")] == gguf.TokenType.CONTROL
    assert types[tokens.index("<tool_call>")] == gguf.TokenType.USER_DEFINED


@pytest.mark.slow
def test_the_llama3_family_exports_a_gguf_with_its_end_of_turn_and_a_modelfile(model_cache, tmp_path):
    """Llama 3's template used to stop the GGUF export (no Ollama format for it); its tokenizer runs Llama 3's split
    and adds no BOS (the template renders it, so the Modelfile's template does too)."""
    folder = tmp_path / "model"
    shutil.copytree(build_tiny_model(TinyModelSpec(family="llama3"), model_cache), folder)
    path = write_gguf(folder, "f16", "tiny-llama3")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    fields = gguf.GGUFReader(path).fields
    assert fields["tokenizer.ggml.pre"].contents() == "llama-bpe"
    assert fields["tokenizer.ggml.eot_token_id"].contents() == tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert fields["tokenizer.ggml.add_bos_token"].contents() is False
    assert round_trip_mismatches(folder, path.name) == []
    text = write_modelfile(path, tokenizer, stop_ids(folder), None).read_text()
    assert text.startswith("# llama3 chat format") and 'TEMPLATE """<|begin_of_text|>{{- if .System }}' in text
    assert "FROM ./model-f16.gguf" in text and 'PARAMETER stop "<|eot_id|>"' in text


def test_a_wrong_pre_tokenizer_name_is_caught_by_the_round_trip(qwen2, tmp_path, monkeypatch):
    """The silent failure the round trip exists for: Qwen2's split written under GPT-2's name."""
    folder = tmp_path / "model"
    shutil.copytree(qwen2, folder, ignore=shutil.ignore_patterns("*.gguf"))
    wrong = {steps: "gpt-2" for steps in gguf_tokenizer.PRE_TOKENIZERS}
    monkeypatch.setattr(gguf_tokenizer, "PRE_TOKENIZERS", wrong)
    path = write_gguf(folder, "f16", "tiny")
    mismatches = round_trip_mismatches(folder, path.name)
    assert any("1000" in text for text in mismatches) and len(mismatches) >= 10, mismatches


def test_what_cannot_be_written_is_refused_by_name():
    from transformers import Gemma2Config

    with pytest.raises(TrainerError, match=r"architecture 'gemma2'.*not one this exporter writes \(llama, qwen2\)"):
        family_of(Gemma2Config())
    metaspace = {"pre_tokenizer": {"type": "Metaspace", "replacement": "▁"}, "normalizer": None}
    with pytest.raises(TrainerError, match=r"matches none llama\.cpp implements here"):
        pre_tokenizer_name(metaspace)


@pytest.mark.slow
def test_export_writes_verified_ggufs_with_modelfiles_card_and_checksums(pipeline_run, bucket, tmp_path):
    """`export.formats=[safetensors,gguf]` on the debug run: both, verified, listed in the card with size and sha256,
    covered by SHA256SUMS and pulled back by `trainer artifacts pull --what model`; gguf alone drops the shards."""
    from trainer.artifacts import pull
    from trainer.export.export import export_model
    from trainer.storage import sha256_file

    checkpoint = pipeline_run.training.output_dir / "checkpoint-20"
    update = {"formats": ["safetensors", "gguf"], "output_dir": tmp_path / "both", "upload": f"s3://{bucket}/r/model"}
    folder = export_model(
        pipeline_run.model_copy(update={"export": pipeline_run.export.model_copy(update=update)}), checkpoint
    )
    names = {p.name for p in folder.iterdir()}
    assert {"model-f16.gguf", "model-q8_0.gguf", "model-f16.Modelfile", "model-q8_0.Modelfile"} <= names
    assert "model.safetensors.index.json" in names
    card = (folder / "README.md").read_text()
    for name in ("model-f16.gguf", "model-q8_0.gguf", "model-f16.Modelfile"):
        assert f"| `{name}` |" in card and sha256_file(folder / name) in card
    assert "gguf q8_0 | `model-q8_0.gguf`" in card and "encodes 200 texts identically" in card
    run_name = pipeline_run.training.run_name.lower()  # not the staging folder's name the card was written in
    assert f"ollama create {run_name} -f model-f16.Modelfile && ollama run {run_name}" in card
    check = subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=folder, capture_output=True)
    assert check.returncode == 0 and "model-q8_0.gguf" in (folder / "SHA256SUMS").read_text()
    assert "FROM ./model-q8_0.gguf" in (folder / "model-q8_0.Modelfile").read_text()
    pull("s3://" + bucket + "/r", tmp_path / "pulled", what="model")
    assert {p.name: sha256_file(p) for p in (tmp_path / "pulled").iterdir()} == {
        p.name: sha256_file(p) for p in folder.iterdir()
    }

    update = {"formats": ["gguf"], "gguf_types": ["bf16"], "output_dir": tmp_path / "gguf", "verify": False}
    folder = export_model(
        pipeline_run.model_copy(update={"export": pipeline_run.export.model_copy(update=update)}), checkpoint
    )
    assert sorted(p.suffix for p in folder.iterdir() if p.suffix in (".gguf", ".safetensors", ".Modelfile")) == [
        ".Modelfile",
        ".gguf",
    ]
    assert not (folder / "config.json").exists()
