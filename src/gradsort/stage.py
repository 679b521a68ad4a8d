"""What every stage script shares: one-line errors, progress lines and the wall time."""

import sys
import time
from collections.abc import Callable

import torch

from gradsort.files import InputFileError
from gradsort.params import ParamsError
from gradsort.tune import NoTrialCompletedError

# Errors whose message is the whole story; anything else keeps its traceback.
EXPECTED_ERRORS = (ParamsError, InputFileError, NoTrialCompletedError)


def set_threads(threads: int) -> int:
    """Use ``threads`` torch threads (0: torch's default); returns the number in use.

    On a shared machine several small-op threads stall each other, so one is the default.
    """
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def run_stage(stage: str, main: Callable[[Callable[[str], None]], None]) -> None:
    """Run ``main(say)``; exit 1 with one ``stage: message`` line on an expected error."""
    start = time.perf_counter()

    def say(line: str) -> None:
        print(f"{stage}: {line}", flush=True)

    try:
        main(say)
    except EXPECTED_ERRORS as err:
        print(f"{stage}: error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    say(f"done in {time.perf_counter() - start:.1f} s")
