"""The synthesize stage: hand-written examples + conversations generated from Go sources → deduplicated → split
(`split.py`: by content hash, held-out symbols, no recitation) → `datasets.DatasetDict`, with `symbols.jsonl` (the
API index) and `manifest.json` beside it.

Hand-written examples come first, so they win every conflict: a generated conversation asking a question a
hand-written one already asks is dropped, as are exact and near duplicates (same text up to case, spacing and
punctuation). Every drop is counted in the manifest.

The saved format (columns, split names, file names) is `trainer/dataset.py`'s.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import DatasetDict

from trainer.config import RESOLVED_CONFIG, Config
from trainer.config_file import save_config
from trainer.data_config import DataConfig
from trainer.dataset import content_hash, example_id, save_processed
from trainer.errors import TrainerError, problems_error
from trainer.go.check import CACHE_FOLDER, CheckTarget
from trainer.go.repo import index_repo
from trainer.go.usage import CheckedUses, checked_uses
from trainer.synthesis.caps import cap_package_share, cap_per_key
from trainer.synthesis.control_tokens import screen_generated
from trainer.synthesis.examples import Example, LoadResult, load_examples
from trainer.synthesis.generate import Generated, generate, generate_probes
from trainer.synthesis.phrasings import PROBE_TEMPLATES
from trainer.synthesis.sources import fetch_source, pinned
from trainer.synthesis.split import split_rows
from trainer.synthesis.teacher import REJECTS_FILE, TEMPLATE, Teacher


@dataclass
class SynthesisResult:
    dataset: DatasetDict
    manifest: dict[str, Any]


@dataclass
class SourceReport:
    """What one Go source gave: its symbols (as written to symbols.jsonl), conversations and manifest entry."""

    symbols: list[dict[str, Any]] = field(default_factory=list)
    generated: list[Generated] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    skipped_files: list[str] = field(default_factory=list)
    capped: dict[str, int] = field(default_factory=lambda: {"per_symbol": 0, "package_share": 0})
    control_tokens: list[str] = field(default_factory=list)  # generated conversations refused or escaped, and why
    teacher: Teacher | None = None  # data.teacher's conversations (in `generated`), rejects and usage
    probes: list[Generated] = field(default_factory=list)  # test-split questions, outside the caps (generate.py)


def collect_sources(config: Config) -> SourceReport:
    data, report = config.data, SourceReport()
    report.teacher = Teacher.start(data) if data.teacher else None
    seen: dict[Path, str] = {}  # the same folder given twice would index and teach everything twice
    for source in data.sources:
        local = fetch_source(source, data.cache_dir)
        folder = local.root.resolve()
        if folder in seen:
            report.skipped_files.append(
                f"{local.name}: {local.url} is the same source as {seen[folder]}; not read twice"
            )
            continue
        seen[folder] = local.name
        index, index_cached = index_repo(local.root, source, local.name, data.generation, data.cache_dir)
        if not index.symbols:
            warn(
                f"{source.url}: no Go API found ({index.files} files read); check the path and the source's "
                "include/exclude globs"
            )
        origin = {"source": local.name, "commit": local.commit}
        indexed = [origin | symbol.to_json() for symbol in index.symbols]
        report.symbols.extend(indexed)
        if report.teacher:
            report.teacher.teach(index, local, indexed)
        mix = data.generation.mix
        uses = CheckedUses()
        if (mix.usage or mix.call_in_context) and data.generation.usage_candidates:
            target = CheckTarget(index.import_path, local.root)
            uses = checked_uses(local.root, index, data.generation, target, data.cache_dir / CACHE_FOLDER)
            if "not_checked" in uses.figures:
                warn(
                    f"{local.name}: no usage conversations, the compile check could not run: "
                    + uses.figures["not_checked"]
                )
        generated = generate(index, local.name, local.commit, data.generation, uses.by_key)
        items, capped = cap_per_key(
            screen_generated(generated, data, report.control_tokens),
            data.generation.max_per_symbol,
            data.generation.seed,
        )
        report.capped["per_symbol"] += capped
        report.probes.extend(
            screen_generated(
                generate_probes(index, local.name, local.commit, data.generation), data, report.control_tokens
            )
        )
        report.generated.extend(items)
        report.skipped_files.extend(f"{local.name}: {line}" for line in index.skipped)
        report.entries.append(
            origin
            | {
                "url": local.url,
                "root": str(local.root.resolve()),  # the folder indexed: what evaluation compiles answers against
                "import_path": index.import_path,
                "clone_cached": local.cached,
                "index_cached": index_cached,
                "files": index.files,
                "bytes": index.bytes,
                "symbols": len(index.symbols),
                "examples": len(index.examples),
                "doc_sections": len(index.sections),
                "skipped_files": len(index.skipped),
                "excluded_files": _counted(index.excluded),  # not compiled for data.generation's platform
                "usage": uses.figures,
            }
        )
    report.generated, capped = cap_package_share(
        report.generated, data.generation.max_package_share, data.generation.seed
    )
    report.capped["package_share"] = capped
    report.generated.extend(report.probes)
    if report.teacher:  # first among generated rows: verified and richer, they win a question both ask
        report.generated = report.teacher.accepted + report.generated
    return report


def _digest(text: str) -> str:
    """Equal for texts equal up to case, spacing and punctuation."""
    return hashlib.sha256(" ".join(re.sub(r"[\W_]+", " ", text.lower()).split()).encode()).hexdigest()


@dataclass
class _Rows:
    rows: list[dict[str, str]] = field(default_factory=list)
    dropped: dict[str, list[str]] = field(
        default_factory=lambda: {"duplicates": [], "near_duplicates": [], "conflicts": []}
    )
    seen: dict[str, str] = field(default_factory=dict)  # id or near-duplicate key → source of the kept one
    questions: dict[str, str] = field(default_factory=dict)  # normalised user question → source
    generated: list[dict[str, Any]] = field(default_factory=list)  # provenance of each kept generated row
    teacher_dropped: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (provenance, why) of teacher rows

    def add(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        source: str,
        provenance: dict[str, Any],
        generated: bool,
    ) -> None:
        identifier = example_id(messages, tools)
        # Digests, not the normalised texts: the sets hold one per row, and whole conversations would double them.
        near = "near:" + _digest(json.dumps([m.get("content") or m.get("tool_calls") for m in messages]))
        question = _digest(" ".join(m["content"] for m in messages if m["role"] == "user"))
        drop = None
        if identifier in self.seen:
            drop = "duplicates", f"{source}: duplicate of {self.seen[identifier]}"
        elif near in self.seen:
            drop = "near_duplicates", f"{source}: near duplicate of {self.seen[near]}"
        elif generated and question in self.questions:
            drop = "conflicts", f"{source}: same question as {self.questions[question]}"
        if drop:
            self.dropped[drop[0]].append(drop[1])
            if provenance.get("template") == TEMPLATE:
                self.teacher_dropped.append((provenance, drop[1]))
            return
        self.seen[identifier] = self.seen[near] = source
        self.questions.setdefault(question, source)
        if generated:
            self.generated.append(provenance)
        self.rows.append(
            {
                "id": identifier,
                "messages": json.dumps(messages, ensure_ascii=False),
                "tools": json.dumps(tools, ensure_ascii=False) if tools else "",
                "source": source,
                "provenance": json.dumps(provenance, ensure_ascii=False),
            }
        )


def _rows(examples: list[Example], test_examples: list[Example], generated: list[Generated]) -> _Rows:
    result = _Rows()
    for hand_written, split in ((examples, {}), (test_examples, {"split": "test"})):
        for example in hand_written:
            file, _, line = example.source.rpartition(":")
            provenance = {"file": file, "line": int(line)} | split
            result.add(example.messages, example.tools, example.source, provenance, False)
    generated.reverse()  # consumed from the end, in order: each conversation is freed once its row is built
    while generated:
        item = generated.pop()
        where = item.provenance
        source = f"{pinned(where['source'], where['commit'])}:{where['file']}:{where['line']} ({where['template']})"
        result.add(item.messages, item.tools, source, where, True)
    return result


def facts_per_symbol(kept: list[dict[str, Any]], symbols: int) -> dict[str, Any]:
    """The manifest's fact count: per symbol, its kept conversations by kind (template; probes, test questions, aside);
    and how many symbols each kind reaches, and the conversations per symbol (min, median, max over the index's
    symbols)."""
    by_symbol: dict[str, Counter[str]] = {}
    for provenance in kept:
        if provenance.get("symbol") and provenance["template"] not in ("overview", "doc_section", *PROBE_TEMPLATES):
            by_symbol.setdefault(provenance["symbol"].split("#")[0], Counter())[provenance["template"]] += 1
    counts = sorted([sum(c.values()) for c in by_symbol.values()] + [0] * max(0, symbols - len(by_symbol)))
    return {
        "conversations_per_symbol": {
            "min": counts[0] if counts else 0,
            "median": counts[len(counts) // 2] if counts else 0,
            "max": counts[-1] if counts else 0,
        },
        "symbols_with": dict(Counter(kind for c in by_symbol.values() for kind in c)),
        "by_symbol": {key: dict(c) for key, c in sorted(by_symbol.items())},
    }


def _counted(records: list[str]) -> dict[str, Any]:
    return {"count": len(records), "records": records}


def warn(message: str) -> None:
    """An input that yields nothing: said as it is found, so the user sees it before the run's summary."""
    print(f"warning: {message}", file=sys.stderr)


def _hand_written(data: DataConfig) -> LoadResult:
    """The examples under data.examples_dir, with a warning for a folder or file that holds none."""
    where = f"{data.examples_dir} (data.examples_dir, relative to the working directory {Path.cwd()})"
    if not data.examples_dir.is_dir():
        if not data.sources:
            raise TrainerError(f"{where}: examples folder not found, and no Go sources")
        warn(f"{where}: examples folder not found; training on conversations generated from the Go sources only")
        return LoadResult()
    loaded = load_examples(data.examples_dir, data.escape_control_tokens)
    if not loaded.per_file:
        warn(f"{data.examples_dir}: no *.jsonl files in the examples folder (data.examples_dir)")
    for path in loaded.empty_files:
        warn(f"{path}: no examples in this file (empty or blank)")
    return loaded


def _test_only(data: DataConfig) -> LoadResult:
    """The examples under data.test_examples_dir: a folder the user named, so one not found is an error."""
    if data.test_examples_dir is None:
        return LoadResult()
    if not data.test_examples_dir.is_dir():
        raise TrainerError(f"{data.test_examples_dir} (data.test_examples_dir): folder not found")
    loaded = load_examples(data.test_examples_dir, data.escape_control_tokens)
    if not loaded.examples and not loaded.errors:
        raise TrainerError(f"{data.test_examples_dir} (data.test_examples_dir): no examples in its *.jsonl files")
    return loaded


def synthesize(config: Config) -> SynthesisResult:
    data = config.data
    if data.validation_fraction + data.test_fraction >= 1:
        raise TrainerError("data.validation_fraction + data.test_fraction must leave room for a train split")
    loaded, test_only = _hand_written(data), _test_only(data)
    errors = loaded.errors + test_only.errors
    if errors and data.on_error == "fail":
        raise problems_error("invalid example (--set data.on_error=skip skips and counts them)", errors)
    sources = collect_sources(config)
    built = _rows(loaded.examples, test_only.examples, sources.generated)
    if not built.rows:
        raise TrainerError(f"{data.examples_dir}: no valid examples found in *.jsonl files, and no Go sources")
    split = split_rows(built.rows, sources.symbols, data)
    by_split = split.by_split
    kept = built.generated
    manifest = {
        "examples_dir": str(data.examples_dir),
        "files": loaded.per_file,
        "test_examples_dir": str(data.test_examples_dir) if data.test_examples_dir else None,
        "test_files": test_only.per_file,
        "counts": {name: len(rows) for name, rows in by_split.items()},
        "heldout": split.heldout,
        "recitation": split.recitation,
        "hand_written": len(built.rows) - len(kept),
        "generated": {
            "count": len(kept),
            "by_source": dict(Counter(p["source"] for p in kept)),
            "by_package": dict(Counter(p["package"] for p in kept)),
            "by_template": dict(Counter(p["template"] for p in kept)),
            "facts": facts_per_symbol(kept, len(sources.symbols)),
            "capped": sources.capped,
        },
        "sources": sources.entries,
        "symbols": {
            "count": len(sources.symbols),
            "by_package": dict(Counter(s["package"] for s in sources.symbols)),
            "by_kind": dict(Counter(s["kind"] for s in sources.symbols)),
        },
        "skipped": _counted(errors),
        "skipped_files": _counted(sources.skipped_files),
        **{kind: _counted(records) for kind, records in built.dropped.items()},
        "normalised": _counted(
            loaded.normalised + test_only.normalised + (sources.teacher.normalised if sources.teacher else [])
        ),
        "control_tokens": _counted(sources.control_tokens),
        "content_hash": content_hash(by_split),
    }
    if sources.teacher:
        manifest["teacher"] = sources.teacher.manifest(built.teacher_dropped)
    dataset = save_processed(data.output_dir, by_split, sources.symbols, manifest)
    (data.output_dir / REJECTS_FILE).unlink(missing_ok=True)  # an earlier run's, which this dataset did not get
    if sources.teacher:
        sources.teacher.write_rejects(data.output_dir)
        if manifest["teacher"]["not_asked"]:
            warn(
                f"data.teacher.max_requests ({data.teacher.max_requests}) reached: "
                f"{manifest['teacher']['not_asked']} requests were not made"
            )
        if not manifest["teacher"]["accepted"]:
            warn(
                f"data.teacher: no teacher conversation was accepted ({manifest['teacher']['requests']} requests); "
                f"why each was dropped: {data.output_dir / REJECTS_FILE}"
            )
    save_config(config, data.output_dir / RESOLVED_CONFIG)
    return SynthesisResult(dataset=dataset, manifest=manifest)
