"""Scores for generated answers, computed from prediction records alone (the same scorer serves `trainer evaluate`
and `trainer evaluate --predictions FILE` for answers produced anywhere).

A record is `{"id", "messages": [prompt turns], "reference": {assistant message}, "prediction": {assistant
message}, "group"?}`; an assistant message has `content` and/or `tool_calls` (`[{"name", "arguments": {...}}]`);
`group` is `seen` (the default) or `heldout` (a question about a symbol held out of training). A metric with nothing
to measure is None (shown as null), never 0 or 1. Definitions: docs/evaluation.md.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.api_index import SymbolIndex, go_blocks
from trainer.go.parser import parser

if TYPE_CHECKING:
    from trainer.evaluation.compile import Compiler

TOOL_CALL_TEXT = "<tool_call>"
# Test conversations by the symbol they ask about: trained on (seen), or held out of training (heldout), where the
# model should look the name up or say it does not know rather than invent; and the hand-written how-to questions
# (howto) that name no held-out symbol.
GROUPS = ("seen", "heldout", "howto")


def _rate(hits: int, total: int) -> float | None:
    return hits / total if total else None


def _calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    return message.get("tool_calls") or []


def _attempts_call(message: dict[str, Any]) -> bool:
    return bool(_calls(message)) or TOOL_CALL_TEXT in (message.get("content") or "")


def _wellformed(message: dict[str, Any]) -> bool:
    """Every call has a string name and object arguments, and no unparsed `<tool_call>` text is left over."""
    calls_ok = all(isinstance(c.get("name"), str) and isinstance(c.get("arguments"), dict) for c in _calls(message))
    return calls_ok and TOOL_CALL_TEXT not in (message.get("content") or "")


def tool_call_metrics(records: list[dict[str, Any]]) -> dict[str, float | int | None]:
    attempted = [r for r in records if _attempts_call(r["prediction"])]
    with_call = [r for r in records if _calls(r["reference"])]
    without_call = [r for r in records if not _calls(r["reference"])]

    def names(message):
        return [c.get("name") for c in _calls(message)]

    def exact(message):
        return [(c.get("name"), json.dumps(c.get("arguments"), sort_keys=True)) for c in _calls(message)]

    return {
        "call_rate": _rate(len(attempted), len(records)),
        "call_recall": _rate(sum(_attempts_call(r["prediction"]) for r in with_call), len(with_call)),
        "call_references": len(with_call),
        "wellformed_rate": _rate(sum(_wellformed(r["prediction"]) for r in attempted), len(attempted)),
        "name_accuracy": _rate(sum(names(r["prediction"]) == names(r["reference"]) for r in with_call), len(with_call)),
        "args_exact": _rate(sum(exact(r["prediction"]) == exact(r["reference"]) for r in with_call), len(with_call)),
        "false_call_rate": _rate(sum(_attempts_call(r["prediction"]) for r in without_call), len(without_call)),
    }


def text_metrics(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """ROUGE-L F1 (mean over answers) and corpus chrF (scaled to [0, 1]) on answers whose reference has text."""
    pairs = [
        (r["reference"]["content"], r["prediction"].get("content") or "")
        for r in records
        if (r["reference"].get("content") or "").strip()
    ]
    if not pairs:
        return {"rougeL": None, "chrf": None}
    import sacrebleu
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = sum(scorer.score(ref, pred)["rougeL"].fmeasure for ref, pred in pairs) / len(pairs)
    chrf = sacrebleu.corpus_chrf([pred for _, pred in pairs], [[ref for ref, _ in pairs]]).score / 100
    return {"rougeL": rouge, "chrf": chrf}


def _tree_sitter_parses(code: str) -> bool:
    return not parser().parse(code.encode("utf-8")).root_node.has_error


def _gofmt_parses(code: str, gofmt: str) -> bool:
    with tempfile.NamedTemporaryFile("w", suffix=".go", delete=False) as handle:
        handle.write(code)
    try:
        return subprocess.run([gofmt, "-e", handle.name], capture_output=True, timeout=30).returncode == 0
    finally:
        Path(handle.name).unlink(missing_ok=True)


def go_parses(block: str, check) -> bool:
    """A fenced block parses as a Go file, or as declarations in one, or as statements in a function body (answers
    show fragments more often than whole files)."""
    candidates = (block, f"package snippet\n\n{block}", f"package snippet\n\nfunc _() {{\n{block}\n}}\n")
    return any(check(candidate) for candidate in candidates)


class GoChecks:
    """Whether each Go block parses, by tree-sitter and by gofmt where it is installed (None without it), and
    compiles where a `Compiler` is given; a block is checked once per scoring, as `score_groups` scores every record
    twice (over all, then in its group) and a gofmt check runs a process per candidate."""

    def __init__(self, compiler: Compiler | None = None) -> None:
        self.gofmt = shutil.which("gofmt")
        self.compiler = compiler
        self.known: dict[str, tuple[bool, bool | None]] = {}

    def __call__(self, block: str) -> tuple[bool, bool | None]:
        if block not in self.known:
            gofmt = self.gofmt
            by_gofmt = go_parses(block, lambda code: _gofmt_parses(code, gofmt)) if gofmt else None
            self.known[block] = (go_parses(block, _tree_sitter_parses), by_gofmt)
        return self.known[block]


def go_code_metrics(records: list[dict[str, Any]], checks: GoChecks | None = None) -> dict[str, Any]:
    """Parse rates over the fenced Go blocks; `compile_rate` over the answers with Go code: the share whose every
    block compiles (None without a compiler)."""
    checks = checks or GoChecks()
    per_answer = [go_blocks(r["prediction"].get("content") or "") for r in records]
    blocks = [block for answer in per_answer for block in answer]
    parsed = [checks(block) for block in blocks]
    with_code = [answer for answer in per_answer if answer]
    compiler = checks.compiler
    if compiler is not None:
        compiler.check(blocks)  # all of them in one batch
    compiled = sum(all(compiler.result(b).ok for b in answer) for answer in with_code) if compiler else 0
    result: dict[str, Any] = {
        "blocks": len(blocks),
        "parse_rate": _rate(sum(by_tree_sitter for by_tree_sitter, _ in parsed), len(blocks)),
        "answers_with_code": len(with_code),
        "compile_rate": _rate(compiled, len(with_code)) if compiler else None,
    }
    if checks.gofmt:
        result["gofmt_parse_rate"] = _rate(sum(bool(by_gofmt) for _, by_gofmt in parsed), len(blocks))
    return result


def _framework_keys(index: SymbolIndex, text: str) -> set[str]:
    """The symbols.jsonl keys of the existing framework names the text presents (`chi.Mux.Get` and `Mux.Get` are
    one), as grounding finds them."""
    return {key for name, known in index.mentions(text) if known for key in index.keys.get(name, ())}


def api_recall(records: list[dict[str, Any]], index: SymbolIndex) -> tuple[float | None, int]:
    """Mean over the records whose reference presents framework names of the share of those names the prediction
    presents too; and how many records that is."""
    shares = []
    for r in records:
        wanted = _framework_keys(index, r["reference"].get("content") or "")
        if wanted:
            shares.append(len(wanted & _framework_keys(index, r["prediction"].get("content") or "")) / len(wanted))
    return (sum(shares) / len(shares) if shares else None), len(shares)


def _answer_mentions(index: SymbolIndex, record: dict[str, Any]) -> list[tuple[str, bool]]:
    """The API names the prediction presents, less the names that do not exist which the prompt gave (repeating the
    user's invented `chi.Mux.GetPut` to say there is none invents nothing; accepting it shows as recall missed) and
    less a last name the answer stops inside (`… takes a Mux.Rout`: cut by max_new_tokens in `Mux.Route`)."""
    prompt = " ".join(message.get("content") or "" for message in record.get("messages") or [])
    given = {name for name, known in index.mentions(prompt) if not known}
    answer = record["prediction"].get("content") or ""
    found = index.mentions(answer)
    if found and not found[-1][1] and answer.endswith(found[-1][0]) and index.begins(found[-1][0]):
        found.pop()
    return [(name, known) for name, known in found if known or name not in given]


def grounding_metrics(records: list[dict[str, Any]], index: SymbolIndex | None) -> dict[str, Any]:
    """`grounded_rate` over the API names the answers present; `invented_rate` over answers: the share that present
    at least one name symbols.jsonl does not have and the prompt did not give; `recall` (`api_recall`) against the
    reference's names."""
    if index is None:
        return {
            "grounded_rate": None, "invented_rate": None, "recall": None, "recall_references": 0, "mentions": 0,
            "invented": [],
        }  # fmt: skip
    per_answer = [_answer_mentions(index, r) for r in records]
    mentions = [m for answer in per_answer for m in answer]
    inventing = sum(any(not known for _, known in answer) for answer in per_answer)
    recall, references = api_recall(records, index)
    return {
        "grounded_rate": _rate(sum(known for _, known in mentions), len(mentions)),
        "invented_rate": _rate(inventing, len(records)),
        "recall": recall,
        "recall_references": references,
        "mentions": len(mentions),
        "invented": sorted({name for name, known in mentions if not known}),
    }


def score(records: list[dict[str, Any]], index: SymbolIndex | None, checks: GoChecks | None = None) -> dict[str, Any]:
    """Every generation metric over `records` (`checks`: the Go blocks already checked in this scoring)."""
    exact = sum(
        (r["reference"].get("content") or "").strip() == (r["prediction"].get("content") or "").strip()
        and _calls(r["reference"]) == _calls(r["prediction"])
        for r in records
    )
    return {
        "n_examples": len(records),
        "exact_match": _rate(exact, len(records)),
        **text_metrics(records),
        "tool_call": tool_call_metrics(records),
        "go_code": go_code_metrics(records, checks),
        "api_grounding": grounding_metrics(records, index),
    }


def group_of(record: dict[str, Any]) -> str:
    return record.get("group") or "seen"


def score_groups(
    records: list[dict[str, Any]], index: SymbolIndex | None, compiler: Compiler | None = None
) -> dict[str, Any]:
    """`score` over all records, with `groups: {seen: score, heldout: score}` over each group's own records (an empty
    group scores n_examples 0 and None for every rate); Go code compiled with `compiler` where given."""
    checks = GoChecks(compiler)
    return {
        **score(records, index, checks),
        "groups": {group: score([r for r in records if group_of(r) == group], index, checks) for group in GROUPS},
    }
