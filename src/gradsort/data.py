"""mnist1d arrays: made offline with the mnist1d package, stored as npz, loaded with checks."""

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gradsort.files import InputFileError, atomic_path

ARRAYS = ("x", "y", "x_test", "y_test")
NUM_CLASSES = 10


class DatasetError(InputFileError):
    """A dataset file that is missing, unreadable or not shaped like mnist1d."""


def make_dataset(num_samples: int, train_split: float, seed: int) -> dict[str, np.ndarray]:
    """Generate mnist1d with ``mnist1d.data.make_dataset``, the package's other defaults kept."""
    from mnist1d.data import get_dataset_args
    from mnist1d.data import make_dataset as mnist1d_make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.train_split = train_split
    args.seed = seed
    dataset = mnist1d_make_dataset(args)
    return {name: np.asarray(dataset[name]) for name in ARRAYS}


def save_dataset(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the arrays of ``ARRAYS`` to an npz file atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **{name: arrays[name] for name in ARRAYS})


def load_dataset(path: str | Path) -> dict[str, np.ndarray]:
    """Read and check an npz written by ``save_dataset``; raises DatasetError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file; run the generate stage first")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise DatasetError(f"{path}: holds one array, not the npz archive of {list(ARRAYS)}")
        with loaded as npz:
            missing = [name for name in ARRAYS if name not in npz.files]
            if missing:
                raise DatasetError(f"{path}: missing arrays {missing}; expected {list(ARRAYS)}")
            arrays = {name: npz[name] for name in ARRAYS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        if isinstance(err, DatasetError):
            raise
        raise DatasetError(f"{path}: not a readable npz file ({err})") from None
    _check_arrays(path, arrays)
    return arrays


def _check_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    x, y, x_test, y_test = (arrays[name] for name in ARRAYS)
    for name, array, ndim in (
        ("x", x, 2),
        ("y", y, 1),
        ("x_test", x_test, 2),
        ("y_test", y_test, 1),
    ):
        if array.ndim != ndim:
            raise DatasetError(f"{path}: {name} has shape {array.shape}, expected {ndim} dims")
    if len(x) != len(y) or len(x_test) != len(y_test):
        raise DatasetError(
            f"{path}: x {x.shape} / y {y.shape} and x_test {x_test.shape} / y_test "
            f"{y_test.shape} must have matching lengths"
        )
    if len(x) == 0 or len(x_test) == 0:
        raise DatasetError(f"{path}: the train and test splits must both be non-empty")
    if x.shape[1] == 0:
        raise DatasetError(f"{path}: x has no features")
    if x.shape[1] != x_test.shape[1]:
        raise DatasetError(f"{path}: x has {x.shape[1]} features but x_test {x_test.shape[1]}")
    for name, array in (("x", x), ("x_test", x_test)):
        with np.errstate(over="ignore"):
            finite = array.dtype.kind == "f" and np.isfinite(array.astype(np.float32)).all()
        if not finite:
            raise DatasetError(f"{path}: {name} must hold floats that are finite in float32")
    for name, array in (("y", y), ("y_test", y_test)):
        if (
            not np.issubdtype(array.dtype, np.integer)
            or array.min() < 0
            or array.max() >= NUM_CLASSES
        ):
            raise DatasetError(f"{path}: {name} must hold integer labels 0..{NUM_CLASSES - 1}")


@dataclass(frozen=True)
class Split:
    """Inputs and labels of one split as tensors ready for training."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


def _split(x: np.ndarray, y: np.ndarray, device: str | torch.device) -> Split:
    return Split(
        torch.tensor(x, dtype=torch.float32, device=device),
        torch.tensor(y, dtype=torch.int64, device=device),
    )


def to_splits(arrays: dict[str, np.ndarray], device: str = "cpu") -> tuple[Split, Split]:
    """The (train, validation) splits: mnist1d's train and test arrays, float32 and int64."""
    return _split(arrays["x"], arrays["y"], device), _split(
        arrays["x_test"], arrays["y_test"], device
    )


def holdout_indices(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, holdout) of a stratified, seeded split of the labels ``y``.

    Each class gives ``round(fraction * count)`` of its samples, chosen at random with
    ``seed``, to the holdout, but at least one and never all of them when it has two or more.
    Both index arrays are sorted, so the samples keep their order within each side.
    """
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        take = round(fraction * len(members))
        if len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        held.append(members[:take])
    holdout = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(len(y)), holdout, assume_unique=True)
    return train, holdout


@dataclass(frozen=True)
class Splits:
    """What a protocol trains on, validates on each epoch and, if anything, tests on once."""

    train: Split
    val: Split
    test: Split | None


PROTOCOLS = ("seed", "holdout")


def protocol_splits(
    arrays: dict[str, np.ndarray],
    protocol: str,
    holdout_fraction: float,
    seed: int,
    device: str | torch.device = "cpu",
) -> Splits:
    """The splits of a protocol.

    ``seed``: train on mnist1d's train split, tune and validate on its test split, as
    published; there is no separate test. ``holdout``: a stratified ``holdout_fraction`` of
    the train split (``holdout_indices`` with ``seed``) is the validation split for tuning and
    the curves, the rest is trained on, and the test split is scored only after training.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {PROTOCOLS}")
    x, y = arrays["x"], arrays["y"]
    test = _split(arrays["x_test"], arrays["y_test"], device)
    if protocol == "seed":
        return Splits(_split(x, y, device), test, None)
    train, holdout = holdout_indices(y, holdout_fraction, seed)
    return Splits(_split(x[train], y[train], device), _split(x[holdout], y[holdout], device), test)
