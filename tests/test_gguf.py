"""GGUF export: each file read back by transformers' GGUF reader (logits, greedy answers, tokenizer round trip).
The Ollama Modelfile beside each file: tests/test_ollama.py."""

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import gguf
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, normalizers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma2Config,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    Phi3Config,
    PreTrainedTokenizerFast,
    Qwen3Config,
)

from trainer.config import TinyModelSpec
from trainer.errors import TrainerError
from trainer.export import gguf_tokenizer
from trainer.export.gguf_export import stop_ids
from trainer.export.gguf_file import GGUF_TYPES, family_of, gguf_path, permute_rows, write_gguf
from trainer.export.gguf_tokenizer import add_tokenizer, pre_tokenizer_name
from trainer.export.gguf_verify import (
    GGUF_TOLERANCE,
    ROUND_TRIP_TEXTS,
    gguf_config,
    gguf_model,
    round_trip_mismatches,
    verify_gguf,
)
from trainer.export.ollama import chat_format, write_modelfile
from trainer.export.verify import PROMPTS, merged_model, prompt_batch, prompt_logits, relative_difference
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


def _plus_one(tensor: torch.Tensor) -> torch.Tensor:
    return tensor + 1


@dataclass(frozen=True)
class Layout:
    """What llama.cpp's converter makes of a family's tiny model (4 query and 2 key heads of 16, 2 layers)."""

    arch: str  # general.architecture
    model_type: str  # what transformers builds from the file
    chat_format: str
    keys: dict[str, float]  # metadata llama.cpp reads
    # (GGUF tensor, the safetensors tensor it holds, what the converter does to it on the way)
    tensors: tuple[tuple[str, str, Callable[[torch.Tensor], torch.Tensor] | None], ...]
    # transformers' own `from_pretrained(gguf_file=)` loads it (5.24 fails on a `llama` file named "mistral": gguf
    # has no `mistral` tensor names)
    from_pretrained: bool = True


LAYOUTS = {
    "qwen3": Layout("qwen3", "qwen3", "chatml", {"qwen3.attention.key_length": 16}, (
        ("blk.0.attn_q_norm.weight", "model.layers.0.self_attn.q_norm.weight", None),
        ("blk.1.attn_k_norm.weight", "model.layers.1.self_attn.k_norm.weight", None),
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", None),  # rotate-half rope: not permuted
    )),
    "gemma3": Layout("gemma3", "gemma3_text", "gemma", {
        "gemma3.attention.key_length": 16, "gemma3.attention.sliding_window": 512, "gemma3.rope.freq_base": 1e6,
    }, (
        ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight", _plus_one),
        ("blk.0.post_attention_norm.weight", "model.layers.0.post_attention_layernorm.weight", _plus_one),
        ("blk.0.ffn_norm.weight", "model.layers.0.pre_feedforward_layernorm.weight", _plus_one),
        ("blk.1.post_ffw_norm.weight", "model.layers.1.post_feedforward_layernorm.weight", _plus_one),
        ("blk.1.attn_q_norm.weight", "model.layers.1.self_attn.q_norm.weight", _plus_one),
        ("blk.1.attn_k_norm.weight", "model.layers.1.self_attn.k_norm.weight", _plus_one),
        ("output_norm.weight", "model.norm.weight", _plus_one),
        ("output.weight", "lm_head.weight", None),  # untied here, as the tiny model is
    )),
    "phi3": Layout("phi3", "phi3", "phi3", {
        "phi3.rope.dimension_count": 16, "phi3.rope.scaling.original_context_length": 4096,
        "phi3.attention.sliding_window": 0,
    }, (
        ("blk.0.attn_qkv.weight", "model.layers.0.self_attn.qkv_proj.weight", None),  # fused: (4 + 2 + 2) x 16 rows
        ("blk.1.ffn_up.weight", "model.layers.1.mlp.gate_up_proj.weight", None),  # fused gate and up: 2 x 192 rows
    )),
    "mistral": Layout("llama", "mistral", "mistral", {"llama.rope.dimension_count": 16}, (
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", partial(permute_rows, heads=4)),
        ("blk.1.attn_k.weight", "model.layers.1.self_attn.k_proj.weight", partial(permute_rows, heads=2)),
    ), from_pretrained=False),
}  # fmt: skip


STORED_AS = {gguf.GGMLQuantizationType.F32: torch.float32, gguf.GGMLQuantizationType.F16: torch.float16}


def check_layout(path, layout: Layout, hf: dict[str, torch.Tensor]) -> None:
    """The file's architecture, keys and the layout's tensors, exactly (F32 and F16 ones; quantized ones are left
    to the logits)."""
    reader = gguf.GGUFReader(path)
    fields = {name: field.contents() for name, field in reader.fields.items()}
    assert fields["general.architecture"] == layout.arch
    assert {key: fields[key] for key in layout.keys} == pytest.approx(layout.keys)
    stored = {t.name: t for t in reader.tensors}
    for name, key, change in layout.tensors:
        want = (change or (lambda t: t))(hf[key].float())
        if (dtype := STORED_AS.get(stored[name].tensor_type)) is not None:
            assert torch.equal(torch.from_numpy(stored[name].data.copy()).float(), want.to(dtype).float()), name


def greedy_ties(folder, path, merged: torch.nn.Module) -> tuple[int, int, int]:
    """The merged model's 12 greedy tokens per prompt, teacher-forced through the file's model (the verification's):
    at each step it must pick the same token, which makes its greedy answer the same, except where the merged model's
    two best tokens are within twice the largest logit difference between the two models there, a tie the file's
    rounding may break either way. Returns (ties, ties it broke the other way, steps)."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    loaded = gguf_model(path, torch.device("cpu"))
    ties = flipped = steps = 0
    for prompt in PROMPTS:
        inputs = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        answer = merged.generate(**inputs, max_new_tokens=12, do_sample=False, pad_token_id=pad)
        with torch.no_grad():
            ours, theirs = (
                model(answer).logits[0, inputs["input_ids"].shape[1] - 1 : -1] for model in (merged, loaded)
            )
        slack = 2 * float((ours - theirs).abs().max())
        best = ours.topk(2)
        tie = best.values[:, 0] - best.values[:, 1] <= slack
        same = ours.argmax(-1) == theirs.argmax(-1)
        assert same[~tie].all(), prompt
        ties, flipped, steps = ties + int(tie.sum()), flipped + int((~same).sum()), steps + len(tie)
    return ties, flipped, steps


@pytest.mark.slow
@pytest.mark.parametrize("family", LAYOUTS)
def test_each_family_is_written_as_llama_cpp_lays_it_out_and_read_back_by_transformers(
    family, model_cache, tmp_path, record_property
):
    """f16 and q8_0 files of the family's tiny model: llama.cpp's architecture, keys and tensor layout; transformers
    reads each back as the family's model (the tokenizer encodes the 200 texts to the same ids, logits within the
    type's bound; the f16 file answers greedily as the merged model does, `greedy_ties`); the Modelfile takes its
    chat format. Each file is named after its family, so transformers builds a Mistral from the `mistral` file of
    llama.cpp's `llama` architecture (any other name: a Llama, which computes the same)."""
    layout = LAYOUTS[family]
    folder = tmp_path / "model"
    shutil.copytree(build_tiny_model(TinyModelSpec(family=family), model_cache), folder)
    cpu = torch.device("cpu")
    batch = prompt_batch(folder)
    expected = prompt_logits(merged_model(folder, cpu), batch, cpu)
    for gguf_type in ("f16", "q8_0"):
        path = write_gguf(folder, gguf_type, family)
        check_layout(path, layout, load_file(folder / "model.safetensors"))
        assert gguf_config(path).model_type == layout.model_type
        difference = verify_gguf(path, gguf_type, batch, expected)  # the round trip first; raises past the bound
        record_property(f"{gguf_type} max relative logit difference", f"{difference:.1e}")
        if layout.from_pretrained:  # the streamed reading computes what transformers' own loading computes
            config = gguf_config(path)
            loaded = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=path.name, config=config, dtype=torch.float32
            )
            streamed = prompt_logits(gguf_model(path, cpu), batch, cpu)
            assert all(map(torch.equal, prompt_logits(loaded.eval(), batch, cpu), streamed)), gguf_type
    merged = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ties, flipped, steps = greedy_ties(folder, gguf_path(folder, "f16"), merged)
    record_property("f16 greedy steps: ties (broken the other way) of all", f"{ties} ({flipped}) of {steps}")
    assert ties <= steps // 10, (ties, steps)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    end_of_turn = gguf.GGUFReader(path).fields["tokenizer.ggml.eot_token_id"].contents()
    text = write_modelfile(path, tokenizer, stop_ids(folder), None).read_text()
    assert chat_format(tokenizer).name == layout.chat_format and f"# {layout.chat_format} chat format" in text
    stop = f"PARAMETER stop {json.dumps(tokenizer.convert_ids_to_tokens(end_of_turn))}\n"
    assert "FROM ./model-q8_0.gguf" in text and stop in text


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


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (Gemma2Config(), r"the architecture 'gemma2' .*not one this exporter writes \(gemma3_text, llama, mistral, "
         r"phi3, qwen2, qwen3\)"),
        (MistralConfig(sliding_window=4096, max_position_embeddings=32768),
         r"mistral attends within a sliding window of 4096 tokens \(sliding_window, context 32768\)"),
        (Qwen3Config(use_sliding_window=True, sliding_window=4096, max_position_embeddings=32768, max_window_layers=0),
         r"qwen3 attends within a sliding window of 4096 tokens"),
        (Phi3Config(rope_scaling={"type": "longrope", "short_factor": [1.0] * 48, "long_factor": [1.0] * 48},
                    max_position_embeddings=131072, original_max_position_embeddings=4096),
         r"rope scaling 'longrope' of phi3 is not written"),
        (Gemma3TextConfig(rope_scaling={"rope_type": "linear", "factor": 8.0}),
         r"rope scaling 'linear' of gemma3_text is not written"),
        (Gemma3TextConfig(query_pre_attn_scalar=128),
         r"gemma3_text's query_pre_attn_scalar is 128; llama\.cpp's Gemma 3 assumes 256 and no GGUF key"),
        (Gemma3TextConfig(final_logit_softcapping=30.0), r"gemma3_text's final_logit_softcapping is 30\.0"),
        (Gemma3TextConfig(rope_local_base_freq=20000.0),
         r"gemma3_text's rope_parameters\.sliding_attention\.rope_theta is 20000\.0; .*assumes 10000\.0"),
        (Gemma3TextConfig(num_hidden_layers=4, layer_types=["sliding_attention", "full_attention"] * 2),
         r"gemma3_text's layer_types is \['sliding_attention', 'full_attention'"),
    ],
)  # fmt: skip
def test_what_cannot_be_written_is_refused_by_name(config, problem):
    """An architecture llama.cpp's converter does not take here, and a setting the file cannot state that llama.cpp
    would run otherwise: one error naming it, before anything is written."""
    with pytest.raises(TrainerError, match=rf"^GGUF export: {problem}"):
        family_of(config)


def test_what_llama_cpp_runs_as_configured_is_taken():
    """Gemma 3 1B's shape and the 27B's query scale (hidden / heads, which llama.cpp knows by its 62 layers);
    Phi-3 mini 4k's window (written, as llama.cpp's converter writes it); a Mistral without a window."""
    assert family_of(Gemma3TextConfig()).arch == gguf.MODEL_ARCH.GEMMA3
    big = Gemma3TextConfig(num_hidden_layers=62, hidden_size=5376, num_attention_heads=32, query_pre_attn_scalar=168)
    assert family_of(big).arch == gguf.MODEL_ARCH.GEMMA3
    assert family_of(Phi3Config(sliding_window=2047)).arch == gguf.MODEL_ARCH.PHI3
    assert family_of(MistralConfig(sliding_window=None)).arch == gguf.MODEL_ARCH.LLAMA


def test_a_wrong_pre_tokenizer_is_refused_by_name():
    metaspace = {"pre_tokenizer": {"type": "Metaspace", "replacement": "▁"}, "normalizer": None}
    with pytest.raises(TrainerError, match=r"matches none llama\.cpp implements here"):
        pre_tokenizer_name(metaspace)


def test_a_sentencepiece_style_tokenizer_is_refused_naming_its_kind(tmp_path):
    """The real Gemma, Mistral and Phi-3 tokenizers: BPE over "▁" pieces with byte fallback. llama.cpp keeps them as
    a SentencePiece vocabulary with scores, which is not written: one error, and no file."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{byte:02X}>": 3 + byte for byte in range(256)}}
    vocab |= {"▁": 259, "a": 260, "▁a": 261}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[("▁", "a")], unk_token="<unk>", byte_fallback=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>").save_pretrained(tmp_path)
    writer = gguf.GGUFWriter(tmp_path / "model-f16.gguf", "llama")
    with pytest.raises(
        TrainerError,
        match=r"^GGUF export: only byte-level BPE tokenizers are written .*; this one is SentencePiece-style BPE "
        r"with byte fallback \(model BPE, decoder Sequence\)",
    ):
        add_tokenizer(writer, tmp_path, len(vocab))
    assert not (tmp_path / "model-f16.gguf").exists()


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
