"""A tuning worker: joins a gradsort study in an Optuna storage and computes its trials.

Usage, on any machine that reaches the storage and has this package installed:

    python -m gradsort.worker --storage postgresql://user:pass@host/db --study NAME

``NAME`` is the one a tune stage prints and writes to ``metrics/tune/<optimizer>.json``
(``study_name``). The worker reads what to train from the study itself; it uses the dataset
at ``--data`` if that file exists and holds the study's arrays, and otherwise generates it
with mnist1d from the study's data params. It exits when no trial is left waiting.
``--storage`` may be left out when the environment variable GRADSORT_STORAGE holds the URL.
"""

import argparse
import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import torch
from sqlalchemy.exc import SQLAlchemyError

from gradsort import distributed
from gradsort.data import ARRAYS, load_dataset, make_dataset, protocol_splits
from gradsort.errors import StageError
from gradsort.history import DivergedError, History
from gradsort.model import initial_state
from gradsort.params import ModelParams, OptimizerSpec, storage_url
from gradsort.tune import describe

STORAGE_ENV = "GRADSORT_STORAGE"
TUNE_SEED = 0  # every trial starts from the seed-0 initial weights and batch order

log = logging.getLogger(__name__)


def dataset_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over the dataset's arrays (name, dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for name in ARRAYS:
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def definition(
    data: dict, model: dict, batch_size: int, tune: dict, optimizer: dict, arrays: dict
) -> dict:
    """Everything that defines one optimizer's study, as JSON-able values."""
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in optimizer["kwargs"].items()}
    return {
        "data": dict(data),
        "dataset_sha256": dataset_digest(arrays),
        "model": dict(model),
        "batch_size": batch_size,
        "tune": dict(tune),
        "optimizer": {**optimizer, "kwargs": kwargs},
    }


def wave_trainer(
    definition: dict, arrays: dict, device: str | torch.device = "cpu"
) -> Callable[[list[float]], list[History | DivergedError]]:
    """``train_wave(lrs)`` for the study ``definition``: each lr trains a model from the
    seed-0 weights for ``tune.epochs`` epochs on the protocol's train split, scored on its
    validation split; the lrs of a wave train together."""
    from gradsort.train import train_many

    data, tune = definition["data"], definition["tune"]
    model = ModelParams(**definition["model"])
    opt = definition["optimizer"]
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in opt["kwargs"].items()}
    spec = OptimizerSpec(opt["base"], opt["transform"], kwargs)
    splits = protocol_splits(
        arrays, data["protocol"], data["holdout_fraction"], data["seed"], device
    )
    features = splits.train.x.shape[1]
    state = initial_state(TUNE_SEED, features, model.hidden_size, model.hidden_layers)

    def train_wave(lrs: list[float]) -> list[History | DivergedError]:
        k = len(lrs)
        return train_many(
            [state] * k,
            model,
            spec,
            lrs,
            [TUNE_SEED] * k,
            splits.train,
            splits.val,
            tune["epochs"],
            definition["batch_size"],
        )

    return train_wave


def dataset_for(definition: dict, path: Path | None) -> dict[str, np.ndarray]:
    """The study's dataset: the file at ``path`` if it holds it, else generated anew."""
    if path is not None and path.is_file():
        arrays = load_dataset(path)
        if dataset_digest(arrays) == definition["dataset_sha256"]:
            return arrays
        log.warning("%s holds another dataset than the study's; generating it", path)
    data = definition["data"]
    arrays = make_dataset(data["num_samples"], data["train_split"], data["seed"])
    if dataset_digest(arrays) != definition["dataset_sha256"]:
        raise StageError("the generated dataset differs from the study's; mnist1d versions?")
    return arrays


def _exit_with(parent: int) -> None:
    """Exit the moment ``parent`` is no longer this process's parent (it died): its study
    file may be replaced by a rerun's, which this worker must not touch."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gradsort.worker", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--storage", help=f"Optuna storage URL (default: ${STORAGE_ENV})")
    parser.add_argument("--study", required=True, help="the study's name")
    parser.add_argument("--data", type=Path, default=Path("data/mnist1d.npz"))
    parser.add_argument("--seed", type=int, default=None, help="this worker's sampler seed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument(
        "--heartbeat", type=int, default=distributed.HEARTBEAT_INTERVAL, help="seconds"
    )
    parser.add_argument(
        "--parent", type=int, default=None, help="exit at once when this process is gone"
    )
    args = parser.parse_args(argv)
    url = args.storage or os.environ.get(STORAGE_ENV)
    if not url:
        parser.error(f"--storage is required when {STORAGE_ENV} is not set")
    if not 0 <= args.threads <= 1024 or args.heartbeat < 1:
        parser.error("--threads must be in [0, 1024] and --heartbeat >= 1")
    if args.parent is not None and os.getppid() != args.parent:
        parser.error(f"--parent {args.parent} is not this worker's parent process")
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device {args.device!r} is not a torch device (cpu, cuda, cuda:1, ...)")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this machine has no CUDA device")
    logging.basicConfig(level=logging.INFO, format="worker: %(message)s")
    if args.parent is not None:
        threading.Thread(target=_exit_with, args=(args.parent,), daemon=True).start()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        url = storage_url(url, studies=None)  # the stage may hand over its own study file
        if url.startswith("sqlite") and not Path(url.split(":///", 1)[-1]).is_file():
            raise StageError(f"no SQLite file at {url}")  # and do not create an empty one
        storage = distributed.make_storage(url, heartbeat_interval=args.heartbeat)
        try:
            study = distributed.load(storage, args.study, args.seed)
        except KeyError:
            raise StageError(f"no study {args.study} in that storage") from None
        spec = study.user_attrs[distributed.DEFINITION_ATTR]
        train_wave = wave_trainer(spec, dataset_for(spec, args.data), device)
    except (
        StageError,
        ValueError,
        ImportError,
        SQLAlchemyError,
        optuna.exceptions.OptunaError,
    ) as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"worker: error: {detail}", file=sys.stderr)
        return 1
    done = distributed.work(
        study,
        storage,
        train_wave,
        spec,
        on_trial=lambda t: log.info("%s", describe(t)),
        heartbeat_interval=args.heartbeat,
    )
    log.info("no trial left waiting; this worker finished %d", done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
