"""`trainer evaluate --endpoint`: the wire format, a scripted server for parsing and retries (what a real model does
not do on cue), and a real OpenAI-compatible server (`transformers serve`) on the exported tiny model, whose answers
and scores equal the in-process evaluation of the same folder."""

import functools
import json

import pytest

from tests.helpers import DEBUG_CONFIG, debug_overrides, openai_server, set_args
from tests.scripted_chat import ScriptedTeacher, completion
from trainer.api_index import load_symbols
from trainer.cli import main
from trainer.config import EndpointConfig, EvaluationConfig
from trainer.errors import TrainerError
from trainer.evaluation.endpoint import client_for, endpoint_answers, predictions_file, wire_messages
from trainer.evaluation.generation import Prompt
from trainer.evaluation.metrics import GROUPS, score_groups
from trainer.redact import redact

LOOKUP = {"name": "lookup_docs", "arguments": {"symbol": "chi.NewRouter"}}
TOOLS = [{"type": "function", "function": {"name": "lookup_docs", "parameters": {"type": "object"}}}]
CONVERSATION = [
    {"role": "system", "content": "You answer questions about chi."},
    {"role": "user", "content": "What does chi.NewRouter return?"},
    {"role": "assistant", "tool_calls": [LOOKUP, {"name": "lookup_docs", "arguments": {"symbol": "chi.Mux"}}]},
    {"role": "tool", "content": "func NewRouter() *Mux"},
    {"role": "tool", "content": "type Mux struct{ ... }"},
]


def test_prompt_turns_go_out_in_the_openai_wire_format():
    assert wire_messages(CONVERSATION) == [
        {"role": "system", "content": "You answer questions about chi."},
        {"role": "user", "content": "What does chi.NewRouter return?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_2_0", "type": "function",
             "function": {"name": "lookup_docs", "arguments": '{"symbol": "chi.NewRouter"}'}},
            {"id": "call_2_1", "type": "function",
             "function": {"name": "lookup_docs", "arguments": '{"symbol": "chi.Mux"}'}},
        ]},
        {"role": "tool", "tool_call_id": "call_2_0", "content": "func NewRouter() *Mux"},
        {"role": "tool", "tool_call_id": "call_2_1", "content": "type Mux struct{ ... }"},
    ]  # fmt: skip


def prompts() -> list[Prompt]:
    reference = {"role": "assistant", "content": "It returns a *chi.Mux."}
    return [
        Prompt("a", CONVERSATION[:2], {"role": "assistant", "tool_calls": [LOOKUP]}, TOOLS, "heldout"),
        Prompt("b", CONVERSATION, reference, TOOLS),
    ]


def answers_of(endpoint: EndpointConfig, config, prompts: list[Prompt]) -> list[dict]:
    """As `evaluate_endpoints` asks: the client first (its key checked), then the answers."""
    return endpoint_answers(endpoint, client_for(endpoint, config), config, prompts)


def test_answers_are_parsed_back_and_429_then_500_are_retried(make_config):
    config = make_config("evaluation.endpoint_concurrency=1", "evaluation.max_new_tokens=7")
    served_call = {"id": "x", "type": "function", "function": {"name": "lookup_docs", "arguments": '{"symbol": "Mux"}'}}
    text_call = 'See <tool_call>{"name": "lookup_docs", "arguments": {"symbol": "chi.Mux"}}</tool_call>'
    server = ScriptedTeacher({  # by the text of the prompt's last turn
        "What does chi.NewRouter return?": [(200, completion({"content": None, "tool_calls": [served_call]}))],
        "type Mux struct": [
            (429, {"error": {"message": "slow down"}}), (500, {"error": {"message": "busy"}}),
            (200, completion({"content": text_call})),  # a server without a tool-call parser: the call is in the text
        ],
    })  # fmt: skip
    with server.serving() as url:
        answers = answers_of(EndpointConfig(url=url, model="served-name"), config, prompts())
    received = server.requests
    call = {"name": "lookup_docs", "arguments": {"symbol": "Mux"}}
    assert answers == [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "assistant", "content": "See", "tool_calls": [{**call, "arguments": {"symbol": "chi.Mux"}}]},
    ]
    assert len(received) == 4 and received[2] == received[1] == received[3]  # the same request, sent three times
    assert received[0] == {
        "model": "served-name", "messages": wire_messages(CONVERSATION[:2]), "tools": TOOLS,
        "temperature": 0.0, "max_completion_tokens": 7, "frequency_penalty": 0.0,
    }  # fmt: skip


def test_a_failure_after_the_retries_and_a_missing_key_are_error_lines(make_config, monkeypatch):
    config = make_config("evaluation.endpoint_max_retries=1")
    overloaded = (503, {"error": {"message": "overloaded"}})
    server = ScriptedTeacher({"chi.NewRouter": [overloaded, overloaded, overloaded]})
    with server.serving() as url:
        endpoint = EndpointConfig(url=url, model="m", label="hosted")
        with pytest.raises(TrainerError, match=rf"^endpoint hosted \({url}\): HTTP 503: .*overloaded") as failed:
            answers_of(endpoint, config, prompts()[:1])
    assert str(failed.value) == f"endpoint hosted ({url}): HTTP 503: overloaded"  # the server's words, not the client's
    assert len(server.requests) == 2  # one try, one retry
    no_choice = r"^endpoint m \(.*\): a response with no choices, for test conversation a$"
    empty = ScriptedTeacher({"chi.NewRouter": [(200, {**completion({}), "choices": []})]})
    with empty.serving() as url, pytest.raises(TrainerError, match=no_choice):
        answers_of(EndpointConfig(url=url, model="m"), config, prompts()[:1])
    monkeypatch.delenv("EVAL_TEST_KEY", raising=False)
    keyed = EndpointConfig(url=url, model="m", api_key_env="EVAL_TEST_KEY")
    unset = r"^endpoint m: api_key_env: the environment variable EVAL_TEST_KEY is not set; set it, or name no"
    with pytest.raises(TrainerError, match=unset):
        answers_of(keyed, config, prompts())
    monkeypatch.setenv("EVAL_TEST_KEY", "sk-endpoint-77")
    hosted = ScriptedTeacher({"chi.NewRouter": ["ok"]})
    with hosted.serving() as url:
        answers_of(keyed.model_copy(update={"url": url}), config, prompts()[:1])
    assert hosted.headers[-1]["authorization"] == "Bearer sk-endpoint-77"
    assert redact("HTTP 401 for sk-endpoint-77") == "HTTP 401 for ***"  # a key a config names is masked too


def test_endpoint_flags_become_evaluation_endpoints(tmp_path, model_cache, capsys, monkeypatch):
    base = ["evaluate", "--config", str(DEBUG_CONFIG), *set_args(debug_overrides(tmp_path, model_cache))]
    assert main([*base, "--endpoint", "http://h:8000/v1"]) == 2
    assert "error: --endpoint http://h:8000/v1: name the served model" in capsys.readouterr().err
    assert main([*base, "--endpoint", "http://h:8000/v1=a", "--model", "b"]) == 2
    assert "every --endpoint names its own model" in capsys.readouterr().err
    assert main([*base, "--endpoint", "http://h:8000/v1=a", "--endpoint", "http://g/v1=a"]) == 2
    assert "two endpoints share the report column 'a'; give them each a label" in capsys.readouterr().err
    monkeypatch.delenv("EVAL_UNSET_KEY", raising=False)
    assert main([*base, "--endpoint", "http://h:8000/v1=a", "--api-key-env", "EVAL_UNSET_KEY"]) == 2
    unset = "error: endpoint a: api_key_env: the environment variable EVAL_UNSET_KEY is not set"
    assert unset in capsys.readouterr().err
    assert main([*base, "--endpoint", "http://h:8000/v1=a", "--checkpoint", "outputs/checkpoint-2"]) == 2
    assert "error: --checkpoint: not with --endpoint (the servers give the answers)" in capsys.readouterr().err
    assert main([*base, "--api-key-env", "EVAL_UNSET_KEY"]) == 2
    assert "error: --api-key-env: only with --endpoint" in capsys.readouterr().err
    endpoints = "evaluation.endpoints=[{url: 'http://h/v1', model: a}]"
    assert main(["pipeline", "--config", str(DEBUG_CONFIG), "--set", endpoints]) == 2
    assert "error: evaluation.endpoints: the pipeline evaluates the model it trains" in capsys.readouterr().err


def test_two_labels_that_would_write_one_predictions_file_are_refused(tmp_path, model_cache, capsys):
    def labelled(*labels: str) -> list[dict]:
        return [{"url": "http://h/v1", "model": "m", "label": label} for label in labels]

    base = ["evaluate", "--config", str(DEBUG_CONFIG), *set_args(debug_overrides(tmp_path, model_cache))]
    assert main([*base, "--set", f"evaluation.endpoints={json.dumps(labelled('first', 'a/b', 'a_b'))}"]) == 2
    refused = "endpoints 'a/b' and 'a_b' would both write predictions.a_b.jsonl; give them labels that differ"
    assert refused in capsys.readouterr().err
    # The first endpoint's answers are predictions.jsonl: its label makes no file, so nothing collides.
    endpoints = EvaluationConfig(endpoints=labelled("a/b", "a_b", "a.b")).endpoints
    assert [predictions_file(at, endpoint) for at, endpoint in enumerate(endpoints)] == [
        "predictions.jsonl", "predictions.a_b.jsonl", "predictions.a.b.jsonl",
    ]  # fmt: skip


@pytest.mark.slow
def test_endpoints_never_replace_a_runs_report(tmp_path, model_cache, capfd):
    """With --run-uri the command runs in a supervised child (a process): refused there, before run.json is touched."""
    base = ["evaluate", "--config", str(DEBUG_CONFIG), *set_args(debug_overrides(tmp_path, model_cache))]
    assert main([*base, "--endpoint", "http://h:8000/v1=a", "--run-uri", "s3://b/runs/r"]) == 2
    assert "error: --endpoint with --run-uri: pull the run's data" in capfd.readouterr().err


@pytest.mark.slow
def test_a_served_export_scores_as_the_in_process_evaluation_of_the_same_folder(pipeline_run, tmp_path):
    """`transformers serve` renders the same chat template (tool calls and results included), decodes greedily with
    max_new_tokens and stops at the folder's generation_config eos ids (a superset of the in-process stop token). One
    difference: its Qwen response parser reads the decode with special tokens kept, so a `<|im_start|>` the random
    model emits mid-answer stays in the served content, where the in-process decode skips it. Without those, the
    answers are identical, so every generation metric is too."""
    folder = pipeline_run.export.output_dir / pipeline_run.training.run_name
    root = pipeline_run.data.output_dir.parent
    base = ["evaluate", "--config", str(DEBUG_CONFIG), *set_args(debug_overrides(root, pipeline_run.model.cache_dir))]
    base += ["--max-new-tokens", "16", "--limit", "16"]  # the groups in turn: some end with tool results
    assert main([*base, "--out", str(tmp_path / "local"), "--model", str(folder)]) == 0
    with openai_server(folder) as url:
        assert main([*base, "--out", str(tmp_path / "one"), "--endpoint", url, "--model", str(folder)]) == 0
        # Side by side: two endpoints in one report, told apart by their labels (here the same server twice).
        both = [{"url": url, "model": str(folder), "label": label} for label in ("vllm-finetuned", "hosted")]
        two = ["--out", str(tmp_path / "two"), "--set", f"evaluation.endpoints={json.dumps(both)}", "--limit", "3"]
        assert main([*base, *two]) == 0
    local, one, two = (json.loads((tmp_path / name / "report.json").read_text()) for name in ("local", "one", "two"))

    def records(name: str, file: str = "predictions.jsonl") -> list[dict]:
        return [json.loads(line) for line in (tmp_path / name / file).open()]

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    special = [token.content for token in tokenizer.added_tokens_decoder.values() if token.special]  # what decode skips

    def without_special_tokens(record: dict) -> dict:
        content = record["prediction"]["content"]
        content = functools.reduce(lambda text, token: text.replace(token, ""), special, content)
        return {**record, "prediction": {**record["prediction"], "content": content.strip()}}

    assert [without_special_tokens(r) for r in records("one")] == records("local")
    assert records("two") == records("two", "predictions.hosted.jsonl") == records("one")[:3]
    assert sum(r["messages"][-1]["role"] == "tool" for r in records("one")) > 0  # tool results went out too
    assert {r["group"] for r in records("one")} == set(GROUPS)  # --limit takes the groups in turn

    def generation(report: dict) -> list[dict]:
        keys = ("n_examples", "exact_match", "rougeL", "chrf", "tool_call", "go_code", "api_grounding")
        scores = [report, *(report["groups"][group] for group in GROUPS)]
        return [{key: value[key] for key in keys} for value in scores]

    symbols = load_symbols(pipeline_run.data.output_dir)
    assert generation(score_groups([without_special_tokens(r) for r in records("one")], symbols)) == generation(local)
    assert [g["tool_call"] for g in generation(one)] == [g["tool_call"] for g in generation(local)]
    assert generation(two) == generation(two["compared"]["hosted"]) and two["n_examples"] == 3
    assert one["endpoints"] == [{"label": str(folder), "url": url, "model": str(folder)}] and "loss" not in one
    assert list(local)[:3] == ["checkpoint", "dataset_hash", "generation_backend"] and list(local)[-1] == "config"
    assert list(two)[:4] == ["label", "endpoints", "dataset_hash", "generation_backend"]
    assert list(two)[-2:] == ["compared", "config"] and local["dataset_hash"] == two["dataset_hash"] is not None
    markdown = (tmp_path / "two" / "report.md").read_text()
    assert "| metric | vllm-finetuned | vllm-finetuned: seen | vllm-finetuned: held-out | hosted | hosted: seen |" in (
        markdown
    )
    assert (
        "| loss (lower is better) | — (predictions scored without a model, or evaluation.teacher_forced off) |"
        in markdown
    )
