"""Deterministic crash points for the preemption tests.

`TRAINER_KILL_AT=<point>:<step>` SIGKILLs the process at that point, as a spot reclaim would:
`step` after optimizer step N; `save` once transformers has written checkpoint-N but before its manifest;
`upload` after the first file of checkpoint-N has been uploaded, before the rest and the remote manifest;
`uploaded` once checkpoint-N, manifest included, is in the bucket (training has gone on meanwhile).
`TRAINER_TERM_AT=<step>:<rank>` sends SIGTERM to the process of that global rank after optimizer step N: a
preemption notice that reaches one node of a run first.
`TRAINER_PAUSE_AT=<point>` waits there for a minute, so a test's Ctrl-C lands mid-write: `shard` once the export
has begun writing its first shard.
Unset (always, outside tests) they do nothing.
"""

import os
import signal
import time

PAUSE_S = 60


def maybe_kill(point: str, step: int | None) -> None:
    if os.environ.get("TRAINER_KILL_AT") == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


def maybe_terminate(step: int) -> None:
    if os.environ.get("TRAINER_TERM_AT") == f"{step}:{os.environ.get('RANK', '0')}":
        os.kill(os.getpid(), signal.SIGTERM)


def maybe_pause(point: str) -> None:
    if os.environ.get("TRAINER_PAUSE_AT") == point:
        time.sleep(PAUSE_S)
