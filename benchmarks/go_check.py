"""Benchmark the compile check of teacher-written Go (trainer/go/check.py) on Debian's chi: batched versus one go
invocation set per snippet.

40 snippets: whole programs, statement and declaration fragments, one in ten with a misspelt chi function (so the
compiler's `go build` pass runs too). Batched: one `check_snippets` call (one `go list`, one `go vet` over every
snippet package, one `go build` over the failures). Unbatched: `check_snippets` once per snippet (a `go list` and a
`go vet` for each). Both after a warm-up run that compiled the standard library and chi into the build cache, each
with snippets no earlier run saw (a fresh route in each), so nothing is served from the cache but the dependencies.
Best of 3 for the batched run; the unbatched run once.

Usage: python benchmarks/go_check.py [--report docs/benchmarks.md]
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from benchlib import append_section, report_path

from trainer.go.check import CheckTarget, check_snippets

CHI = Path("/usr/share/gocode/src/github.com/go-chi/chi")
TARGET = CheckTarget("github.com/go-chi/chi/v5", CHI)
SNIPPETS = 40
REPEATS = 3
GOAL = 5.0
PROGRAM = """package main

import (
	"net/http"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
)

func main() {
	r := chi.NewRouter()
	r.Use(middleware.Logger)
	r.Get("/ROUTE/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(chi.URLParam(r, "id")))
	})
	http.ListenAndServe(":3000", r)
}
"""
STATEMENTS = """r := chi.NewRouter()
r.Route("/ROUTE", func(r chi.Router) {
	r.With(middleware.NoCache).Get("/", func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintln(w, "ROUTE")
	})
})
"""
DECLARATIONS = """func routes() http.Handler {
	r := chi.NewRouter()
	r.Mount("/ROUTE", http.NotFoundHandler())
	return r
}
"""


def snippets(route: str) -> list[str]:
    shapes = [PROGRAM, STATEMENTS, DECLARATIONS, PROGRAM.replace("chi.NewRouter()", "chi.NewRuoter()")]
    weights = [15, 11, 10, 4]  # one in ten broken
    chosen = [shape for shape, weight in zip(shapes, weights, strict=True) for _ in range(weight)]
    return [shape.replace("ROUTE", f"{route}{i}") for i, shape in enumerate(chosen)]


def timed(batch: list[str], work_dir: Path, batched: bool) -> tuple[float, int]:
    start = time.perf_counter()
    results = (
        check_snippets(batch, TARGET, work_dir)
        if batched
        else [result for snippet in batch for result in check_snippets([snippet], TARGET, work_dir)]
    )
    return time.perf_counter() - start, sum(not r.ok for r in results)


def main(report: Path) -> None:
    if not CHI.is_dir() or shutil.which("go") is None:
        raise SystemExit(f"{CHI} or `go` is missing: run `make go-sources`")
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        timed(snippets("warmup"), work_dir, batched=True)
        batched = [timed(snippets(f"batched{n}"), work_dir, batched=True) for n in range(REPEATS)]
        unbatched_s, unbatched_failures = timed(snippets("single"), work_dir, batched=False)
    batched_s, batched_failures = min(batched)
    assert batched_failures == unbatched_failures == SNIPPETS // 10, (batched_failures, unbatched_failures)
    ratio = unbatched_s / batched_s
    lines = [
        "",
        f"## Go compile check — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores",
        "",
        f"{SNIPPETS} chi snippets (programs, statement and declaration fragments; {batched_failures} with a misspelt "
        "function), checked against Debian's chi with a warm build cache for the standard library and chi. Batched: "
        "one `check_snippets` call; unbatched: one call per snippet. Command: `make bench`. "
        f"Target: batched ≥ {GOAL:.0f}× the snippets/s.",
        "",
        "| run | s | snippets/s |",
        "| --- | ---: | ---: |",
        f"| batched (best of {REPEATS}) | {batched_s:.2f} | {SNIPPETS / batched_s:.1f} |",
        f"| one check per snippet | {unbatched_s:.2f} | {SNIPPETS / unbatched_s:.1f} |",
        f"| **speed-up of batching** | **{ratio:.1f}×** | |",
        "",
    ]
    append_section(report, lines)


if __name__ == "__main__":
    main(report_path(__doc__))
