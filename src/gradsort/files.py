"""Atomic output files: a temp file in the target's folder, then a rename."""

import contextlib
import csv
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from gradsort.errors import StageError


class InputFileError(StageError, ValueError):
    """An input file of a stage that is missing or not what the stage wrote."""


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object from ``path``; raises InputFileError naming the file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file; run the stage that writes it") from None
    except (OSError, ValueError) as err:
        raise InputFileError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputFileError(f"{path}: expected a JSON object")
    return data


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; it replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would otherwise survive the rename
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def finite_or_none(value):
    """``value`` with every non-finite float replaced by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write strict JSON (non-finite numbers become null) atomically."""
    text = json.dumps(finite_or_none(data), indent=2, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: str | os.PathLike, rows: Sequence[dict], fields: Sequence[str]) -> None:
    """Write ``rows`` as CSV with header ``fields`` atomically; non-finite numbers are empty."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in finite_or_none(row).items()})
