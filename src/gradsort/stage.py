"""What every stage script shares: one-line errors, progress lines and the wall time."""

import sys
import time
from collections.abc import Callable

import torch

from gradsort.errors import StageError
from gradsort.params import ParamsError


def set_threads(threads: int) -> int:
    """Use ``threads`` torch threads (0: torch's default); returns the number in use.

    On a shared machine several small-op threads stall each other, so one is the default.
    """
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def select_device(requested: str) -> torch.device:
    """The torch device for ``train.device``: ``auto`` takes CUDA when it is there."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ParamsError(
            "params: train.device='cuda' is not allowed on this machine, which has no CUDA "
            "device; expected auto or cpu"
        )
    return torch.device(requested)


def run_stage(stage: str, main: Callable[[Callable[[str], None]], None]) -> None:
    """Run ``main(say)``; exit 1 with one ``stage: message`` line on an expected error."""
    start = time.perf_counter()

    def say(line: str) -> None:
        print(f"{stage}: {line}", flush=True)

    try:
        main(say)
    except StageError as err:  # the message is the whole story; others keep their traceback
        print(f"{stage}: error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)
    say(f"done in {time.perf_counter() - start:.1f} s")
