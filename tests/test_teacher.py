"""The teacher (data.teacher): a scripted chat-completions server (tests/scripted_chat.py) for what a real model
cannot do on cue (fixed replies, 429 and 500), the real Go toolchain on chi and gin from Debian's packages for the
compile checks, and `transformers serve` on the tiny model as a real OpenAI-compatible server whose replies are
noise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import DatasetDict

from tests.helpers import CHI, openai_server
from tests.scripted_chat import SLOW, ScriptedTeacher, chat, reply
from trainer.errors import TrainerError
from trainer.go import modules
from trainer.synthesis.generate import LOOKUP_DOCS, SYSTEM
from trainer.synthesis.synthesize import synthesize
from trainer.synthesis.teacher import REJECTS_FILE

GIN = Path("/usr/share/gocode/src/github.com/gin-gonic/gin")
pytestmark = pytest.mark.skipif(
    not CHI.is_dir() or not GIN.is_dir(), reason="chi's and gin's Debian packages are missing: `make go-sources`"
)
NEW_ROUTER = "NewRouter returns a new Mux object"  # its doc comment: in the one request about chi.NewRouter
GOOD_CODE = """package main

import (
\t"net/http"

\t"github.com/go-chi/chi/v5"
)

func main() {
\tr := chi.NewRouter()
\tr.Get("/", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("hi")) })
\thttp.ListenAndServe(":3000", r)
}"""
MISSPELT_CODE = GOOD_CODE.replace("chi.NewRouter()", "chi.NewRuoter()")
QUESTION = "How do I serve a route with chi?"
NO_CODE = "Make a router with `chi.NewRouter()`, then add routes to it."  # grounded, and nothing to compile


def with_code(code: str, question: str = QUESTION) -> str:
    return reply(chat(question, f"Make a router with `chi.NewRouter` and add a route:\n\n```go\n{code}\n```"))


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One data.cache_dir for the module: chi's and gin's compiled packages are built once. Replies cannot leak from
    test to test: each test's teacher has a model name of its own, part of every cache key."""
    return tmp_path_factory.mktemp("teacher-cache")


@pytest.fixture
def teacher_config(make_config, shared_cache, request):
    """The debug config on one file of a Debian Go package (a handful of subjects, one request each) with the
    teacher at `url` (model: the test's name), no waiting between retries."""

    def make(url: str, *overrides: str, source: Path = CHI, include: str = "chi.go", **kwargs):
        return make_config(
            f"data.sources=[{{url: {source}, include: [{include}]}}]",
            f"data.cache_dir={shared_cache}",
            f"data.teacher={{base_url: '{url}', model: {request.node.name}, kinds: [howto], backoff_s: 0}}",
            *overrides,
            **kwargs,
        )

    return make


def teacher_rows(output_dir: Path) -> list[dict]:
    saved = DatasetDict.load_from_disk(str(output_dir))
    rows = [row for split in saved.values() for row in split]
    return [row for row in rows if json.loads(row["provenance"]).get("template") == "teacher"]


def rejects(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / REJECTS_FILE).read_text().splitlines()]


def about(requests: list[dict], text: str) -> list[dict]:
    return [r for r in requests if text in r["messages"][1]["content"]]


TEST_MODEL = "test_a_compiling_conversation_is_accepted_with_teacher_provenance"


def test_a_compiling_conversation_is_accepted_with_teacher_provenance(teacher_config):
    teacher = ScriptedTeacher({NEW_ROUTER: [with_code(GOOD_CODE)]})
    with teacher.serving() as url:
        config = teacher_config(url)
        manifest = synthesize(config).manifest
    section = manifest["teacher"]
    assert section["requests"] == len(teacher.requests) == 4  # NewRouter, Router, Routes, Middlewares
    assert (section["accepted"], section["repaired"], section["cached"]) == (4, 0, 0)
    assert section["rejected"] == dict.fromkeys(("malformed", "compile", "invented_api", "duplicate", "judge"), 0)
    assert section["tokens"] == {"prompt": 400, "completion": 40}
    (asked,) = about(teacher.requests, NEW_ROUTER)
    assert asked["response_format"] == {"type": "json_object"} and asked["model"] == TEST_MODEL
    assert "chi.go:61" in asked["messages"][1]["content"]  # the material's provenance
    rows = {json.loads(r["messages"])[1]["content"]: r for r in teacher_rows(config.data.output_dir)}
    provenance = json.loads(rows[QUESTION]["provenance"])
    assert provenance == {
        "source": "chi", "commit": None, "file": "chi.go", "line": 61, "template": "teacher",
        "symbol": "github.com/go-chi/chi/v5.NewRouter", "package": "github.com/go-chi/chi/v5",
        "teacher": {"model": TEST_MODEL, "kind": "howto", "repaired": False},
    }  # fmt: skip
    assert json.loads(rows[QUESTION]["messages"])[0]["role"] == "system"
    assert manifest["generated"]["by_template"]["teacher"] == 4
    assert rejects(config.data.output_dir) == []


def test_a_compile_failure_goes_back_for_one_repair_and_a_rerun_reads_every_reply_from_the_cache(teacher_config):
    teacher = ScriptedTeacher({NEW_ROUTER: [with_code(MISSPELT_CODE)], "does not compile": [with_code(GOOD_CODE)]})
    with teacher.serving() as url:
        config = teacher_config(url)
        first = synthesize(config).manifest
        asked = len(teacher.requests)
        second = synthesize(config).manifest
    section = first["teacher"]
    repair = next(r for r in teacher.requests if "does not compile" in r["messages"][-1]["content"])
    assert [m["role"] for m in repair["messages"]] == ["system", "user", "assistant", "user"]
    assert repair["messages"][2]["content"] == with_code(MISSPELT_CODE)  # the same chat, the teacher's own reply
    assert "NewRuoter" in repair["messages"][3]["content"]  # the compiler's message
    assert (section["requests"], section["accepted"], section["repaired"]) == (5, 4, 1)
    (row,) = [r for r in teacher_rows(config.data.output_dir) if QUESTION in r["messages"]]
    assert json.loads(row["provenance"])["teacher"]["repaired"] is True
    assert "chi.NewRouter()" in row["messages"] and "NewRuoter" not in row["messages"]
    assert asked == 5 and len(teacher.requests) == asked  # the rerun asked nothing: asks and the repair were cached
    assert (second["teacher"]["requests"], second["teacher"]["cached"]) == (0, 5)
    assert second["teacher"]["tokens"] == {"prompt": 0, "completion": 0}
    assert second["content_hash"] == first["content_hash"] and second["teacher"]["repaired"] == 1


def test_a_failed_repair_drops_the_conversation_with_the_compilers_message(teacher_config):
    teacher = ScriptedTeacher({NEW_ROUTER: [with_code(MISSPELT_CODE)], "does not compile": [with_code(MISSPELT_CODE)]})
    with teacher.serving() as url:
        config = teacher_config(url)
        section = synthesize(config).manifest["teacher"]
    assert (section["accepted"], section["repaired"], section["rejected"]["compile"]) == (3, 0, 1)
    (dropped,) = rejects(config.data.output_dir)
    assert dropped["reason"] == "compile" and "NewRuoter" in dropped["message"]
    assert dropped["provenance"]["symbol"] == "github.com/go-chi/chi/v5.NewRouter"
    assert not [r for r in teacher_rows(config.data.output_dir) if QUESTION in r["messages"]]


def test_gin_code_is_compiled_against_gin_and_its_dependencies(teacher_config):
    gin_main = """package main

import "github.com/gin-gonic/gin"

func main() {
\tr := gin.Default()
\tr.Run(":8080")
}"""
    wrong = gin_main.replace("r.Run(", "r.Runn(")
    good = chat("How do I answer JSON with gin?", f"```go\n{gin_main}\n```")
    bad = chat("How do I serve JSON with gin?", f"```go\n{wrong}\n```")
    default_doc = "Default returns an Engine instance"  # in the one request about gin.Default
    teacher = ScriptedTeacher({default_doc: [reply(good, bad)], "does not compile": [reply(bad)]})
    with teacher.serving() as url:
        config = teacher_config(url, source=GIN, include="gin.go")
        section = synthesize(config).manifest["teacher"]
    assert section["rejected"]["compile"] == 1
    (dropped,) = [r for r in rejects(config.data.output_dir) if r["reason"] == "compile"]
    assert "Runn" in dropped["message"] and dropped["provenance"]["symbol"] == "github.com/gin-gonic/gin.Default"
    assert any("How do I answer JSON with gin?" in r["messages"] for r in teacher_rows(config.data.output_dir))


def test_a_conversation_presenting_an_api_the_index_lacks_is_dropped(teacher_config):
    invented = reply(chat(QUESTION, "Call `chi.NewRouterWithTimeout(5)`; it returns a router that times out."))
    teacher = ScriptedTeacher({NEW_ROUTER: [invented]})
    with teacher.serving() as url:
        config = teacher_config(url)
        section = synthesize(config).manifest["teacher"]
    assert (section["accepted"], section["rejected"]["invented_api"]) == (3, 1)
    (dropped,) = rejects(config.data.output_dir)
    assert dropped["reason"] == "invented_api" and "chi.NewRouterWithTimeout" in dropped["message"]
    assert dropped["conversation"]["messages"][0]["content"] == QUESTION


def test_a_conversation_opening_with_a_system_turn_gets_the_pipelines_and_faces_the_other_checks(teacher_config):
    """The training data's format allows a leading system turn, and chat models write one: it is replaced by the
    pipeline's (whose name-dropping is not the teacher's to write), counted as a normalisation, and the rest of the
    conversation is judged as any other."""
    own = {"role": "system", "content": "You are a chi expert who knows chi.SuperRouter."}  # not in the index
    compiles = with_code(GOOD_CODE)
    invented = chat("How do I time a router out?", "Call `chi.NewRouterWithTimeout(5)`.")
    conversations = [json.loads(compiles)["conversations"][0], invented]
    for conversation in conversations:
        conversation["messages"].insert(0, own)
    teacher = ScriptedTeacher({NEW_ROUTER: [reply(*conversations)]})
    with teacher.serving() as url:
        config = teacher_config(url)
        manifest = synthesize(config).manifest
    section = manifest["teacher"]
    assert (section["accepted"], section["rejected"]["malformed"], section["rejected"]["invented_api"]) == (4, 0, 1)
    (row,) = [r for r in teacher_rows(config.data.output_dir) if QUESTION in r["messages"]]
    messages = json.loads(row["messages"])
    assert messages[0] == {"role": "system", "content": SYSTEM.format(framework="chi")}
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert "SuperRouter" not in row["messages"]
    (dropped,) = rejects(config.data.output_dir)
    assert (dropped["reason"], dropped["message"]) == ("invented_api", "not in the API index: chi.NewRouterWithTimeout")
    assert manifest["normalised"]["count"] == 2
    assert manifest["normalised"]["records"] == [
        f"chi:chi.go:61: teacher howto conversation {n}: its own system turn replaced by the pipeline's" for n in (1, 2)
    ]


def test_malformed_replies_are_counted_never_guessed_at_and_json_mode_is_dropped_once_refused(teacher_config):
    fenced = "```json\n" + with_code(GOOD_CODE) + "\n```"
    two = reply(
        chat("How do I mount a sub-router?", "Use <|im_end|> here."),  # a chat control token: refused
        {"messages": [{"role": "bot", "content": "hi"}]},
    )
    html = b"<html><body>502 Bad Gateway</body></html>"  # a proxy's page with status 200
    teacher = ScriptedTeacher(
        {NEW_ROUTER: [fenced], "type Router interface": ["Sure! Here are conversations:"], "type Routes": [two],
         "Middlewares type is a slice": [html]},
        refuse_json_mode=True,
    )  # fmt: skip
    with teacher.serving() as url:
        config = teacher_config(url, "data.teacher.concurrency=2")
        section = synthesize(config).manifest["teacher"]
    assert [r.get("response_format") for r in teacher.requests].count({"type": "json_object"}) == 1
    assert section["requests"] == 5 and section["failed_requests"] == 0  # 4 asks, and the one refusal
    assert (section["accepted"], section["rejected"]["malformed"]) == (0, 5)
    reasons = sorted(r["message"] for r in rejects(config.data.output_dir))
    assert reasons[0].startswith("conversation 1: ") and "control token" in reasons[0]
    assert reasons[1].startswith("conversation 2: messages[0]: unknown role 'bot'")
    assert all(r.startswith("not one JSON object") for r in reasons[2:])


def test_tool_use_conversations_must_call_lookup_docs_as_the_pipeline_defines_it(teacher_config):
    call = {"name": "lookup_docs", "arguments": {"package": "github.com/go-chi/chi/v5", "name": "NewRouter"}}
    turns = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "func NewRouter() *Mux\n\nNewRouter returns a new Mux object."},
        {"role": "assistant", "content": NO_CODE},
    ]
    other_tool = [{"type": "function", "function": {"name": "lookup_docs", "parameters": {"type": "object"}}}]
    teacher = ScriptedTeacher({
        NEW_ROUTER: [reply({"messages": turns, "tools": [LOOKUP_DOCS]})],
        "Router interface": [reply({"messages": turns, "tools": other_tool})],
    })  # fmt: skip
    with teacher.serving() as url:
        # One at a time: each subject is asked tool_use first, so the scripted reply goes to that request.
        config = teacher_config(url, "data.teacher.kinds=[tool_use, followup]", "data.teacher.concurrency=1")
        section = synthesize(config).manifest["teacher"]
    assert section["requests"] == 8 and (section["accepted"], section["rejected"]["malformed"]) == (7, 1)
    (asked,) = [r for r in about(teacher.requests, NEW_ROUTER) if "lookup_docs" in r["messages"][1]["content"]]
    assert json.dumps(LOOKUP_DOCS) in asked["messages"][1]["content"]
    (row,) = [r for r in teacher_rows(config.data.output_dir) if QUESTION in r["messages"]]
    assert json.loads(row["tools"]) == [LOOKUP_DOCS] and json.loads(row["provenance"])["teacher"]["kind"] == "tool_use"
    (dropped,) = rejects(config.data.output_dir)
    assert "'tools' must be exactly the lookup_docs definition" in dropped["message"]


def test_a_duplicate_of_a_hand_written_example_is_dropped_and_counted(teacher_config, examples_dir):
    answer = "Call chi.NewRouter() and add routes to it."
    (examples_dir / "mine.jsonl").write_text(json.dumps(chat(QUESTION, answer)) + "\n")
    teacher = ScriptedTeacher({NEW_ROUTER: [reply(chat(QUESTION, NO_CODE))]})
    with teacher.serving() as url:
        config = teacher_config(url, examples=examples_dir)
        manifest = synthesize(config).manifest
    assert (manifest["teacher"]["accepted"], manifest["teacher"]["rejected"]["duplicate"]) == (3, 1)
    (dropped,) = rejects(config.data.output_dir)
    assert dropped["reason"] == "duplicate" and str(examples_dir / "mine.jsonl") in dropped["message"]
    assert manifest["hand_written"] == 1 and manifest["conflicts"]["count"] == 1


def test_429_500_and_a_timeout_are_retried_and_every_attempt_counts_against_the_budget(teacher_config):
    busy, broken = (429, {"error": {"message": "slow down"}}), (500, {"error": {"message": "boom"}})
    teacher = ScriptedTeacher({NEW_ROUTER: [busy, broken, SLOW, reply(chat(QUESTION, NO_CODE))]})
    with teacher.serving() as url:
        config = teacher_config(url, "data.teacher.timeout_s=0.5")
        section = synthesize(config).manifest["teacher"]
    assert len(about(teacher.requests, NEW_ROUTER)) == 4
    assert (section["requests"], section["failed_requests"], section["accepted"]) == (7, 0, 4)
    stubborn = ScriptedTeacher({NEW_ROUTER: [broken] * 3})  # max_retries 1: two attempts, then given up
    with stubborn.serving() as url:
        config = teacher_config(url, "data.teacher.max_retries=1", "data.teacher.model=stubborn")  # not cached
        section = synthesize(config).manifest["teacher"]
    assert (len(about(stubborn.requests, NEW_ROUTER)), section["failed_requests"], section["accepted"]) == (2, 1, 3)
    (failure,) = rejects(config.data.output_dir)
    assert failure["reason"] == "request_failed" and failure["message"] == "HTTP 500: boom (after 1 retries)"
    garbled = ScriptedTeacher({NEW_ROUTER: [b'{"choices": [']})  # JSON declared, not sent: not retried, listed
    with garbled.serving() as url:
        config = teacher_config(url, "data.teacher.model=garbled")
        section = synthesize(config).manifest["teacher"]
    assert (len(about(garbled.requests, NEW_ROUTER)), section["failed_requests"], section["accepted"]) == (1, 1, 3)
    (failure,) = rejects(config.data.output_dir)
    assert failure["message"].startswith("a 200 reply that is not JSON: ")


def test_the_budget_stops_requests_says_how_many_were_not_made_and_a_rerun_goes_on_from_there(teacher_config, capsys):
    teacher = ScriptedTeacher({NEW_ROUTER: [(500, {"error": {"message": "boom"}}), reply(chat(QUESTION, NO_CODE))]})
    with teacher.serving() as url:
        config = teacher_config(url, "data.teacher.max_requests=3", "data.teacher.concurrency=1")
        section = synthesize(config).manifest["teacher"]
    assert len(teacher.requests) == section["requests"] == 3
    # In the seeded order Router and Middlewares are answered, NewRouter's first try gets a 500; its retry and
    # Routes are not made.
    assert (section["not_asked"], section["accepted"]) == (2, 2)
    assert "data.teacher.max_requests (3) reached: 2 requests were not made" in capsys.readouterr().err
    with teacher.serving() as url:  # a run stopped by its budget (or a crash) goes on where it stopped
        section = synthesize(teacher_config(url, "data.teacher.concurrency=1")).manifest["teacher"]
    assert (section["requests"], section["cached"], section["accepted"]) == (2, 2, 4)
    assert len(teacher.requests) == 5 and about(teacher.requests[3:], NEW_ROUTER)


def test_the_judge_drops_conversations_scored_under_the_threshold(teacher_config):
    low = json.dumps({"score": 3, "reason": "vague"})
    judged = {"How do I use this?": [low, low, "I would give it an 8."]}
    teacher = ScriptedTeacher({NEW_ROUTER: [reply(chat(QUESTION, NO_CODE))], **judged})
    with teacher.serving() as url:
        config = teacher_config(url, "data.teacher.judge={threshold: 6, model: critic}")
        section = synthesize(config).manifest["teacher"]
    judge_requests = [r for r in teacher.requests if r["model"] == "critic"]
    assert len(judge_requests) == 4 and all(r["max_tokens"] == 256 for r in judge_requests)
    assert (section["accepted"], section["rejected"]["judge"]) == (1, 3)
    dropped = sorted(r["message"] for r in rejects(config.data.output_dir))
    assert dropped[0].startswith("judge reply is not JSON")  # an unreadable verdict keeps nothing
    assert dropped[1:] == ["score 3 < data.teacher.judge.threshold 6: vague"] * 2


def test_the_api_key_comes_from_the_named_variable_an_unset_one_and_a_401_are_errors(teacher_config, monkeypatch):
    teacher = ScriptedTeacher()
    with teacher.serving() as url:
        config = teacher_config(url, "data.teacher.api_key_env=TEACHER_TEST_KEY")
        monkeypatch.delenv("TEACHER_TEST_KEY", raising=False)
        with pytest.raises(TrainerError, match="TEACHER_TEST_KEY is not set"):
            synthesize(config)
        monkeypatch.setenv("TEACHER_TEST_KEY", "sk-planted-42")
        synthesize(config)
    assert {h["authorization"] for h in teacher.headers} == {"Bearer sk-planted-42"}
    refused = ScriptedTeacher({"": [(401, {"error": {"message": "invalid api key"}})]})  # "" matches every request
    with refused.serving() as url:
        config = teacher_config(url, "data.teacher.model=refused")
        with pytest.raises(TrainerError, match=f"^data.teacher.base_url {url}: HTTP 401: invalid api key$"):
            synthesize(config)
    assert "sk-planted-42" not in (config.data.output_dir / "resolved_config.yaml").read_text()


def test_without_go_the_run_stops_before_any_request(teacher_config, monkeypatch, tmp_path):
    teacher = ScriptedTeacher()
    with teacher.serving() as url:
        config = teacher_config(url)
        monkeypatch.setenv("PATH", str(tmp_path))  # git, go: nothing
        modules.toolchain.cache_clear()  # found once per process; a failed look-up is not kept
        with pytest.raises(TrainerError, match="`go` is not on PATH"):
            synthesize(config)
    assert teacher.requests == []


@pytest.mark.slow
def test_a_real_server_writing_noise_gets_every_reply_rejected_and_the_run_ends_with_a_warning(
    teacher_config, tiny_model_dir, capsys
):
    with openai_server(tiny_model_dir) as url:
        config = teacher_config(
            url, f"data.teacher.model={tiny_model_dir}", "data.teacher.max_tokens=16",
            "data.teacher.concurrency=2",
        )  # fmt: skip
        manifest = synthesize(config).manifest
    section = manifest["teacher"]
    assert section["requests"] == 4 and section["failed_requests"] == 0
    assert section["accepted"] == 0 and section["rejected"]["malformed"] == 4
    assert section["tokens"]["completion"] > 0
    assert "teacher" not in manifest["generated"]["by_template"]
    assert "no teacher conversation was accepted (4 requests)" in capsys.readouterr().err


def test_synthesis_without_a_teacher_does_not_import_the_openai_client():
    check = "import sys, trainer.synthesis.synthesize; print('openai' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"
