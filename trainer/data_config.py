"""The `data:` section's schemas: Go sources, generated conversations, the teacher LLM, the split.

Part of the typed configuration (`trainer/config.py` assembles the sections and says how path values resolve).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import ByteSize, Field, field_validator

from trainer.config_base import EnvVarName, StrictModel
from trainer.go.build import KNOWN_ARCH, KNOWN_OS, BuildContext


class GoSource(StrictModel):
    """One Go repository to learn from: a git URL (https, ssh, file://) or a local folder."""

    url: str = Field(description="https://github.com/org/repo, git@github.com:org/repo, file:///path or a local path")
    ref: str | None = Field(None, description="Branch, tag or commit; default: the remote's HEAD")
    name: str | None = Field(None, description="Short name in manifests and provenance; default: the last URL part")
    import_path: str | None = Field(None, description="Module import path; default: read from go.mod")
    include: list[str] = Field(["**/*.go", "*.md", "docs/**/*.md"], description="Globs relative to the repo root")
    exclude: list[str] = Field([], description="Globs relative to the repo root to leave out of include")
    submodules: bool = Field(False, description="Also fetch git submodules (same transports, no hooks, depth 1)")

    @field_validator("url")
    @classmethod
    def _no_option_injection_or_credentials(cls, url: str) -> str:
        if not url.strip() or url.lstrip().startswith("-"):
            raise ValueError("must be a URL or path, and must not start with '-'")
        if re.match(r"https?://[^/]*@", url):
            # It would be written to manifests, provenance and logs; a token in the environment is not.
            raise ValueError("must not hold credentials (user:token@); set GITHUB_TOKEN for private GitHub repos")
        return url


class GenerationMix(StrictModel):
    """Conversations per fact of each kind (`trainer/synthesis/generate.py`), each in its own phrasing; 0 turns a
    kind off. The mix before the fact kinds: what_does and signature 1, the new ones 0, max_per_symbol 4."""

    what_does: int = Field(2, ge=0, le=8, description="What a symbol does (its doc), asked by name")
    signature: int = Field(2, ge=0, le=8, description="A func or method's signature")
    members: int = Field(1, ge=0, le=8, description="A struct or interface's members")
    example: int = Field(1, ge=0, le=8, description="An Example function, with its output")
    which_symbol: int = Field(4, ge=0, le=8, description="Which symbol does a job the doc describes, in user words")
    usage: int = Field(2, ge=0, le=8, description="How-to by job, answered with the framework's own code")
    call_in_context: int = Field(1, ge=0, le=8, description="A symbol named, shown called in the framework's own code")
    contrast: int = Field(1, ge=0, le=8, description="A symbol beside a neighbour its doc names")
    detail: int = Field(2, ge=0, le=8, description="Which symbol a later sentence of its doc is about, per sentence")
    no_such_api: int = Field(3, ge=0, le=8, description="A name it lacks (made up, misplaced): none; the real one")
    tool_lookup: int = Field(1, ge=0, le=8, description="A lookup_docs call, then the answer from its result")
    overview: int = Field(1, ge=0, le=8, description="A package's doc")
    doc_section: int = Field(1, ge=0, le=8, description="A markdown doc section")


class GenerationSettings(StrictModel):
    """How conversations are generated from the extracted API index (`trainer/synthesis/generate.py`)."""

    seed: int = 0
    max_per_symbol: int = Field(16, gt=0, description="Generated conversations per symbol, at most")
    mix: GenerationMix = GenerationMix()
    probes: bool = Field(
        True, description="Probes: test questions asking a trained fact the other way round (the seen group's)"
    )
    usage_candidates: int = Field(
        4, ge=0, le=32, description="Uses of a symbol in the framework's own code compile-checked, shortest first"
    )
    max_package_share: float = Field(
        0.5, gt=0, le=1, description="Share of all generated conversations one package may hold (with 2+ packages)"
    )
    include_internal: bool = Field(False, description="Extract internal/ packages (not importable by users)")
    include_testdata: bool = False
    include_vendor: bool = False
    max_file_bytes: ByteSize = Field(ByteSize(1_000_000), description="Larger files are skipped and reported")
    goos: str = Field("linux", description="Target GOOS: the API index holds what go build compiles for it")
    goarch: str = Field("amd64", description="Target GOARCH")
    build_tags: list[str] = Field([], description="Extra build tags, as `go build -tags`")
    cgo: bool = Field(True, description='Files that import "C" count, as with CGO_ENABLED=1')
    go_version: str = Field("1.22", pattern=r"^1\.\d{1,3}$", description="Release tags go1.1 … go1.N hold")

    @field_validator("goos", "goarch")
    @classmethod
    def _known_platform(cls, value: str, info) -> str:
        known = KNOWN_OS if info.field_name == "goos" else KNOWN_ARCH
        if value not in known:
            raise ValueError(f"unknown {info.field_name} {value!r}; expected one of {', '.join(sorted(known))}")
        return value

    @field_validator("build_tags")
    @classmethod
    def _tag_names(cls, tags: list[str]) -> list[str]:
        bad = [tag for tag in tags if not re.fullmatch(r"[\w.]+", tag)]
        if bad:
            raise ValueError(f"build tags are letters, digits, _ and . only: {bad}")
        return tags

    def build_context(self) -> BuildContext:
        return BuildContext(self.goos, self.goarch, self.cgo, tuple(self.build_tags), self.go_version)


TeacherKind = Literal["howto", "followup", "tool_use"]


class TeacherJudge(StrictModel):
    """An LLM that scores each verified teacher conversation; below `threshold` it is dropped."""

    model: str | None = Field(None, description="Judge model on the teacher's server; default: data.teacher.model")
    threshold: int = Field(7, ge=1, le=10, description="Lowest score (1-10) a conversation may have and be kept")
    max_tokens: int = Field(256, gt=0, description="Tokens the judge may write per verdict")


class TeacherSettings(StrictModel):
    """An OpenAI-compatible chat-completions server that writes conversations from the API index (docs/teacher.md).

    Every real HTTP request counts against `max_requests`: first asks, retries, repairs and judge calls alike;
    replies read from the on-disk cache count nothing."""

    base_url: str = Field(description="The server's OpenAI API root, e.g. http://localhost:8000/v1")
    model: str = Field(description="Model name the server knows (vLLM: --served-model-name or the model path)")
    api_key_env: EnvVarName | None = Field(
        None,
        description="NAME of the environment variable holding the API key (never the key); null: no key (a local "
        "server). A named variable that is unset is an error",
    )
    concurrency: int = Field(4, gt=0, le=256, description="Requests in flight at once")
    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(2048, gt=0, description="Tokens the teacher may write per reply")
    max_requests: int = Field(
        1000, gt=0, description="Hard budget of real HTTP requests (retries, repairs, judge calls included)"
    )
    timeout_s: float = Field(180.0, gt=0, description="Per request; a timeout is retried like a 5xx")
    max_retries: int = Field(3, ge=0, description="Retries of one request after 429, 5xx, a timeout or lost connection")
    backoff_s: float = Field(
        1.0, ge=0, description="First wait before a retry, doubled each time (a server's Retry-After wins, capped 60 s)"
    )
    kinds: list[TeacherKind] = Field(
        ["howto", "followup", "tool_use"],
        min_length=1,
        description="What to ask for, one request per symbol (or doc section) and kind: howto (question, answer with "
        "complete Go code), followup (a second question in the same chat), tool_use (a lookup_docs call first)",
    )
    conversations_per_request: int = Field(2, gt=0, le=10, description="Conversations asked for in one request")
    judge: TeacherJudge | None = Field(None, description="Score each verified conversation with an LLM; null: no judge")


class DataConfig(StrictModel):
    sources: list[GoSource] = Field([], description="Go repositories to extract an API index and conversations from")
    generation: GenerationSettings = GenerationSettings()
    cache_dir: Path = Field(Path("data/cache"), description="Clones and extraction results, reused across runs")
    examples_dir: Path = Path("data/raw/examples")
    test_examples_dir: Path | None = Field(
        None,
        description="Hand-written conversations for the test split alone, never trained on: your own questions to "
        "measure the model with (evaluation's how-to group; held-out where one names a held-out symbol)",
    )
    output_dir: Path = Path("data/processed")
    on_error: Literal["fail", "skip"] = Field("fail", description="fail: any bad record stops the run")
    escape_control_tokens: bool = Field(
        False, description="Escape chat control tokens (<|im_end|>, …) in examples and Go docs as text, not refuse them"
    )
    validation_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)
    split_salt: str = Field("trainer-split-v1", description="Changing it reshuffles every split")
    heldout_symbols_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of the API index's symbols held out of training entirely: every conversation about or "
        "naming one goes to the test split (evaluation's held-out group); 0 holds out nothing",
    )
    teacher: TeacherSettings | None = Field(
        None, description="An LLM that writes verified conversations from the API index; null: off (docs/teacher.md)"
    )
