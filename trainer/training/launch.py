"""torchrun that exits as its processes did: `python -m trainer.training.launch ARGS` is `torchrun ARGS`, except
that when a process fails, its exit code (the first to fail) is the launcher's, not torchrun's blanket 1.

A preemption stops every process of a run with exit code 75 (trainer/errors.py), the code SkyPilot's
`recover_on_exit_codes` restarts on without counting it as an error; torchrun alone would report 1.
"""

from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main


def exit_code(failed: ChildFailedError) -> int:
    """The first failed process's exit code, as a shell reports it (128 + N for a process killed by signal N)."""
    _, failure = failed.get_first_failure()
    return failure.exitcode if failure.exitcode >= 0 else 128 - failure.exitcode


if __name__ == "__main__":
    try:
        main()
    except ChildFailedError as failed:
        print(failed, file=sys.stderr)  # torchrun's table of the failed processes, as it would print it
        sys.exit(exit_code(failed))
