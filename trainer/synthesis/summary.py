"""What `trainer synthesize` prints: the counts, each source, the held-out split and recitation, the teacher's tally,
and the first few records of each list with where the rest are (the manifest holds them all)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.dataset import MANIFEST_FILE
from trainer.synthesis.sources import pinned

SHOWN_RECORDS = 3  # of each list (skipped, conflicts, …): all of them would scroll the counts away (87 conflicts, say)


def summary_lines(manifest: dict[str, Any], output_dir: Path) -> list[str]:
    out: list[str] = []
    counts = ", ".join(f"{name} {n}" for name, n in manifest["counts"].items())
    out.append(f"synthesize: {counts} → {output_dir}")
    for entry in manifest["sources"]:
        cached = " (cached)" if entry["index_cached"] else ""
        source = pinned(entry["source"], entry["commit"])
        usage = entry.get("usage") or {}
        if "not_checked" in usage:
            used = f"; usage not compiled: {usage['not_checked']}"
        elif usage:
            used = f"; usage: {usage['passed']} of {usage['checked']} uses compile ({usage['symbols']} symbols)"
        else:
            used = ""
        out.append(f"  source {source}: {entry['files']} files, {entry['symbols']} symbols{cached}{used}")
    generated = manifest["generated"]
    if generated["count"] or manifest["sources"]:
        templates = ", ".join(f"{name} {n}" for name, n in sorted(generated["by_template"].items()))
        test_only = sum((manifest.get("test_files") or {}).values())
        held = f" ({test_only} of them for test only)" if test_only else ""
        out.append(f"  hand-written {manifest['hand_written']}{held}, generated {generated['count']} ({templates})")
        facts = generated["facts"]
        spread = facts["conversations_per_symbol"]
        reach = ", ".join(f"{kind} {n}" for kind, n in sorted(facts["symbols_with"].items()))
        out.append(
            f"  per symbol: median {spread['median']} conversations ({spread['min']}-{spread['max']}); symbols "
            f"reached: {reach}"
        )
        capped = generated["capped"]
        out.append(
            f"  capped: {capped['per_symbol']} over data.generation.max_per_symbol, "
            f"{capped['package_share']} over data.generation.max_package_share"
        )
    held, recited = manifest["heldout"], manifest["recitation"]
    if held["symbols"]:
        out.append(
            f"  held out: {held['symbols']} symbols (data.heldout_symbols_fraction), {held['conversations']} "
            f"conversations, all in test: {held['about_heldout_symbol']} about one, "
            f"{held['naming_heldout_symbol']['count']} naming one, {held['sharing_heldout_text']['count']} sharing "
            "its text (manifest.json: heldout)"
        )
    before = recited["before"]
    out.append(
        f"  recitation: {recited['sharing_span']} of {recited['test_answers']} test answers share a "
        f"{recited['span_words']}-word span with a training answer ({before['sharing_span']} of "
        f"{before['test_answers']} on the hash split; {recited['moved_to_train']['count']} moved to train)"
    )
    for kind in (
        "skipped",
        "skipped_files",
        "duplicates",
        "near_duplicates",
        "conflicts",
        "normalised",
        "control_tokens",
    ):
        if manifest[kind]["count"]:
            out.append(f"  {kind}: {manifest[kind]['count']}")
            records = manifest[kind]["records"]
            for record in records[:SHOWN_RECORDS]:
                out.append(f"    {record}")
            if len(records) > SHOWN_RECORDS:
                out.append(f"    … {len(records) - SHOWN_RECORDS} more in {output_dir / MANIFEST_FILE}")
    if "teacher" in manifest:
        out.extend(_teacher_lines(manifest["teacher"]))
    return out


def _teacher_lines(section: dict[str, Any]) -> list[str]:
    """The terminal's lines for the manifest's `teacher` section."""
    asked = f"{section['requests']} requests, {section['cached']} replies from the cache"
    if section["failed_requests"]:
        asked += f", {section['failed_requests']} failed after retries"
    if section["not_asked"]:
        asked += f", {section['not_asked']} not asked (data.teacher.max_requests spent)"
    rejected = ", ".join(f"{reason} {count}" for reason, count in section["rejected"].items())
    tokens = section["tokens"]
    return [
        f"  teacher {section['model']}: {asked}",
        f"    accepted {section['accepted']} ({section['repaired']} after a repair); rejected: {rejected} "
        f"(see {section['rejects_file']})",
        f"    tokens: prompt {tokens['prompt']:,}, completion {tokens['completion']:,} (this run; cached replies cost "
        "none)",
    ]
