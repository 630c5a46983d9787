"""Teacher-written conversations, verified before they may enter the dataset (docs/teacher.md).

Per Go source: one request per subject (a documented symbol or a doc section) and kind, carrying the material and
its provenance (teacher_prompts.py), answered through the cache and budget of teacher_client.py. Each conversation
of a reply then passes, in order:
  1. the contract (`examples.normalise_record`, control tokens included)            else `malformed`
     (the teacher's own system turn is left out for the pipeline's, counted in the manifest's `normalised`)
  2. every fenced Go block compiles (`go.check.check_snippets`, one batch); a failure goes back to the teacher in
     the same chat for one repair, which is checked the same way                       else `compile`
  3. API grounding: no name presented as the framework's that `symbols.jsonl` lacks   else `invented_api`
  4. the judge's score, when `data.teacher.judge` is set                               else `judge`
Duplicates (exact, near, or the same question as a hand-written example) are dropped later by synthesize.py's
`_Rows` with every other row, and attributed here as `duplicate`. Every drop is a line in `REJECTS_FILE`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.api_index import SymbolIndex, go_blocks
from trainer.data_config import DataConfig
from trainer.go import modules
from trainer.go.repo import RepoIndex
from trainer.jsonl import write_jsonl
from trainer.synthesis import teacher_prompts as prompts
from trainer.synthesis.generate import SYSTEM, Generated, row_provenance
from trainer.synthesis.sources import LocalSource, pinned

if TYPE_CHECKING:  # the openai client is imported when a teacher is configured, not by every synthesis run
    from trainer.synthesis.teacher_client import Reply, TeacherClient

TEMPLATE = "teacher"  # provenance `template` of every teacher row
REJECTS_FILE = "teacher_rejects.jsonl"  # beside the dataset: one line per dropped conversation or reply
REASONS = ("malformed", "compile", "invented_api", "duplicate", "judge")
FAILED = "request_failed"  # a rejects-file line, not a rejected conversation: counted as failed_requests


@dataclass
class Request:
    subject: prompts.Subject
    chat: list[dict[str, str]]
    provenance: dict[str, Any]  # the rows' and the rejects' (its `teacher.kind` says what was asked)


@dataclass
class Candidate:
    """One conversation of a reply on its way through the checks."""

    request: Request
    reply: str  # the whole reply it came in, which a repair turn quotes back
    number: int  # its position in that reply, from 1
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    repaired: bool = False

    def record(self) -> dict[str, Any]:
        return {"messages": self.messages} | ({"tools": self.tools} if self.tools else {})


@dataclass
class Teacher:
    """The run's teacher: its client (budget, cache, usage) and what every source has given so far."""

    data: DataConfig
    client: TeacherClient
    accepted: list[Generated] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    # "source:file:line: teacher KIND conversation N: what was changed", for the manifest's `normalised`
    normalised: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, data: DataConfig) -> Teacher:
        assert data.teacher is not None
        from trainer.synthesis.teacher_client import TeacherClient

        modules.toolchain()  # no Go toolchain: one error line before any request is paid for, not after all
        return cls(data, TeacherClient(data.teacher, data.cache_dir))

    def reject(self, reason: str, message: str, provenance: dict[str, Any], conversation: Any = None) -> None:
        self.rejects.append(
            {"reason": reason, "message": message, "provenance": provenance}
            | ({"conversation": conversation} if conversation is not None else {})
        )

    def teach(self, index: RepoIndex, local: LocalSource, symbols: list[dict[str, Any]]) -> None:
        """Ask about one source's API and keep what passes every check."""
        settings = self.data.teacher
        assert settings is not None
        where = pinned(local.name, local.commit)
        requests = [
            _request(subject, kind, local, index, settings.conversations_per_request, settings.model)
            for subject in prompts.subjects(index, where, self.data.generation.seed)
            for kind in settings.kinds
            if kind != prompts.TOOL_KIND or subject.tool_result
        ]
        replies = self.client.complete_all([r.chat for r in requests], f"Teacher: {local.name}")
        candidates = [c for request, reply in zip(requests, replies, strict=True) for c in self._read(request, reply)]
        candidates = self._compiled(candidates, index, local)
        grounding = SymbolIndex(symbols)
        candidates = [c for c in candidates if self._grounded(c, grounding)]
        if settings.judge is not None:
            candidates = self._judged(candidates, local.name)
        system = {"role": "system", "content": SYSTEM.format(framework=local.name)}
        for candidate in candidates:
            provenance = candidate.request.provenance
            provenance = provenance | {"teacher": provenance["teacher"] | {"repaired": candidate.repaired}}
            messages = [system, *candidate.messages]
            self.accepted.append(Generated(messages, candidate.tools, provenance, provenance["symbol"]))

    def _read(self, request: Request, reply: Reply, number: int = 0) -> list[Candidate]:
        """The reply's conversations that keep the contract; the rest rejected as malformed. `number`: a repair's
        reply, which must hold that one conversation."""
        if reply.content is None:  # counted by the client; a failure is listed too, a request not made is not
            if reply.failed:
                self.reject(FAILED, reply.error, request.provenance)
            return []
        try:
            records = prompts.read_reply(reply.content, reply.finish_reason)
            if number and len(records) != 1:
                raise prompts.Malformed(f"a repair must hold one conversation, not {len(records)}")
        except prompts.Malformed as exc:
            self.reject("malformed", str(exc), request.provenance, reply.content)
            return []
        found = []
        for position, record in enumerate(records, 1):
            try:
                read = prompts.conversation(record, self.data.escape_control_tokens)
            except prompts.Malformed as exc:
                self.reject("malformed", f"conversation {number or position}: {exc}", request.provenance, record)
                continue
            origin = request.provenance
            where = f"{origin['source']}:{origin['file']}:{origin['line']}: teacher {origin['teacher']['kind']}"
            self.normalised.extend(f"{where} conversation {number or position}: {note}" for note in read.notes)
            found.append(Candidate(request, reply.content, number or position, read.messages, read.tools))
        return found

    def _compiled(self, candidates: list[Candidate], index: RepoIndex, local: LocalSource) -> list[Candidate]:
        """Those whose Go compiles, first try or after one repair."""
        failures = _compile_failures(candidates, index, local, self.data.cache_dir)
        passed = [c for c, failure in zip(candidates, failures, strict=True) if not failure]
        failed = [(c, failure) for c, failure in zip(candidates, failures, strict=True) if failure]
        chats = [prompts.repair(c.request.chat, c.reply, c.number, failure) for c, failure in failed]
        replies = self.client.complete_all(chats, f"Teacher repairs: {local.name}")
        repaired: list[Candidate] = []
        first_failures: list[str] = []
        for (candidate, failure), reply in zip(failed, replies, strict=True):
            if reply.content is None:
                self.reject("compile", f"{failure}\n(no repair: {reply.error})", candidate.request.provenance)
                continue
            for item in self._read(candidate.request, reply, candidate.number):
                item.repaired = True
                repaired.append(item)
                first_failures.append(failure)
        second = _compile_failures(repaired, index, local, self.data.cache_dir)
        for candidate, failure, first in zip(repaired, second, first_failures, strict=True):
            if failure:
                message = f"{failure}\n(first attempt: {first})"
                self.reject("compile", message, candidate.request.provenance, candidate.record())
            else:
                passed.append(candidate)
        return passed

    def _grounded(self, candidate: Candidate, grounding: SymbolIndex) -> bool:
        text = "\n".join(m["content"] for m in candidate.messages)
        invented = sorted({name for name, known in grounding.mentions(text) if not known})
        if invented:
            message = "not in the API index: " + ", ".join(invented)
            self.reject("invented_api", message, candidate.request.provenance, candidate.record())
        return not invented

    def _judged(self, candidates: list[Candidate], framework: str) -> list[Candidate]:
        judge = self.data.teacher.judge
        chats = [prompts.judge(framework, c.request.subject.material, c.record()) for c in candidates]
        replies = self.client.complete_all(chats, "Teacher judge", judge.max_tokens, judge.model)
        kept = []
        for candidate, reply in zip(candidates, replies, strict=True):
            try:
                if reply.content is None:
                    raise prompts.Malformed(f"not judged: {reply.error}")
                score, reason = prompts.verdict(reply.content)
            except prompts.Malformed as exc:
                self.reject("judge", str(exc), candidate.request.provenance, candidate.record())
                continue
            if score < judge.threshold:
                message = f"score {score} < data.teacher.judge.threshold {judge.threshold}: {reason}"
                self.reject("judge", message, candidate.request.provenance, candidate.record())
                continue
            kept.append(candidate)
        return kept

    def manifest(self, duplicates: list[tuple[dict[str, Any], str]]) -> dict[str, Any]:
        """The manifest's `teacher` section; `duplicates` are synthesize's drops of teacher rows (provenance, why)."""
        for provenance, why in duplicates:
            self.reject("duplicate", why, provenance)
        rejected = Counter(reject["reason"] for reject in self.rejects)
        usage = self.client.usage
        return {
            "model": self.data.teacher.model,
            "requests": usage.requests,
            "cached": usage.cached,
            "not_asked": usage.not_asked,
            "failed_requests": usage.failed,
            "accepted": len(self.accepted) - len(duplicates),
            "repaired": sum(g.provenance["teacher"]["repaired"] for g in self.accepted)
            - sum(p["teacher"]["repaired"] for p, _ in duplicates),
            "rejected": {reason: rejected[reason] for reason in REASONS},
            "tokens": {"prompt": usage.prompt_tokens, "completion": usage.completion_tokens},
            "rejects_file": REJECTS_FILE,
        }

    def write_rejects(self, output_dir: Path) -> None:
        write_jsonl(output_dir / REJECTS_FILE, self.rejects)


def _request(
    subject: prompts.Subject, kind: str, local: LocalSource, index: RepoIndex, count: int, model: str
) -> Request:
    origin = row_provenance(
        local.name, local.commit, subject.file, subject.line, TEMPLATE, subject.key, subject.package
    )
    origin["teacher"] = {"model": model, "kind": kind, "repaired": False}
    chat = prompts.ask(subject, kind, local.name, index.import_path, count)
    return Request(subject, chat, origin)


def _compile_failures(candidates: list[Candidate], index: RepoIndex, local: LocalSource, cache_dir: Path) -> list[str]:
    """Per candidate, '' when each of its Go blocks compiles, else the compiler's messages; one batch for all."""
    from trainer.go.check import CACHE_FOLDER, CheckTarget, check_snippets

    blocks = [
        [block for m in c.messages if m["role"] == "assistant" for block in go_blocks(m["content"])] for c in candidates
    ]
    flat = [block for per_candidate in blocks for block in per_candidate]
    target = CheckTarget(index.import_path, local.root)
    results = iter(check_snippets(flat, target, cache_dir / CACHE_FOLDER))
    failures = []
    for per_candidate in blocks:
        mine = [next(results) for _ in per_candidate]
        failures.append("\n".join(r.message or "does not compile" for r in mine if not r.ok))
    return failures
