"""Stage tune@<name>: the Optuna study of one optimizer's learning rate.

Usage: python stages/tune.py NAME, NAME an entry of params.yaml's ``optimizers``.

With the defaults (``tune.storage`` empty, ``tune.workers: 1``) the study lives in a local
SQLite file and its trials train in this process, a wave at a time. Otherwise the study
lives in the storage (``tune.storage``, or a local SQLite file shared by the workers), this
process and ``tune.workers - 1`` worker processes compute its trials, and workers started
elsewhere with ``python -m gradsort.worker`` may join.
"""

import dataclasses
import fcntl
import os
import subprocess
import sys
from pathlib import Path

import optuna
from sqlalchemy.exc import SQLAlchemyError

from gradsort import distributed
from gradsort.data import load_dataset
from gradsort.errors import StageError
from gradsort.files import write_csv, write_json
from gradsort.params import ParamsError, load_params, storage_url
from gradsort.stage import run_stage, select_device, set_threads
from gradsort.tune import (
    NoTrialCompletedError,
    describe,
    edge_warning,
    run_study,
    sqlite_url,
    study_summary,
    trial_rows,
)
from gradsort.worker import STORAGE_ENV, definition, wave_trainer

DATA = "data/mnist1d.npz"
TRIAL_FIELDS = ("trial", "lr", "value", "state", "fail_reason")


def study_definition(params, spec, arrays):
    """Everything that defines this optimizer's study (``gradsort.worker.definition``)."""
    return definition(
        dataclasses.asdict(params.data),
        dataclasses.asdict(params.model),
        params.train.batch_size,
        {
            k: v
            for k, v in dataclasses.asdict(params.tune).items()
            if k not in ("storage", "workers")  # where and by whom, not what
        },
        dataclasses.asdict(spec),
        arrays,
    )


def local_study(say, params, name, study_def, arrays, device, partial):
    """The default: trials trained here in waves, the study in the side file ``partial``."""
    tune = params.tune
    return run_study(
        wave_trainer(study_def, arrays, device),
        tune.trials,
        tune.lr_low,
        tune.lr_high,
        tune.sampler_seed,
        tune.objective,
        tune.wave_size,
        storage=sqlite_url(partial),
        study_name=name,
        on_trial=lambda t: say(describe(t)),
    )


def open_study(url, study_name, study_def, tune):
    """The storage and the study in it, created or joined; one line on any failure."""
    try:
        storage = distributed.make_storage(url)
        study, created = distributed.create_or_load(
            storage, study_name, study_def, tune.trials, tune.sampler_seed
        )
    except (ImportError, SQLAlchemyError, optuna.exceptions.OptunaError, ValueError) as err:
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ParamsError(f"params: tune.storage: cannot use the study there: {detail}") from None
    return storage, study, created


def shared_study(say, params, name, study_def, arrays, device, threads, url):
    """The study in ``url``, its trials computed by this process and tune.workers - 1
    worker processes (and any that join); returns it once all its trials have finished."""
    tune = params.tune
    study_name = distributed.study_name(name, study_def)
    storage, study, created = open_study(url, study_name, study_def, tune)
    state = "created" if created else "joined"
    say(f"study {study_name} ({state}); trials {distributed.counts(study)}")
    # --parent: a worker exits at once if this process dies (kill -9), so it never writes to
    # the study file of a rerun.
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gradsort.worker",
                "--study",
                study_name,
                "--data",
                DATA,
                "--seed",
                str(tune.sampler_seed + i),
                "--threads",
                str(threads),
                "--device",
                str(device),
                "--parent",
                str(os.getpid()),
            ],
            env={**os.environ, STORAGE_ENV: url},
        )
        for i in range(1, tune.workers)
    ]
    try:
        distributed.work(
            study,
            storage,
            wave_trainer(study_def, arrays, device),
            study_def,
            on_trial=lambda t: say(describe(t)),
        )
        for i, worker in enumerate(workers, start=1):
            if worker.wait() != 0:
                say(f"warning: worker {i} exited with {worker.returncode}; its trials fail stale")
        distributed.wait_until_finished(study, tune.trials)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    return study, study_name


def main(say, name):
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the stage prints its own lines
    params = load_params()
    threads = set_threads(params.train.threads)
    if name not in params.optimizers:
        raise ParamsError(f"optimizers.{name}: no such optimizer; have {sorted(params.optimizers)}")
    spec, tune = params.optimizers[name], params.tune
    device = select_device(params.train.device)
    url = storage_url(tune.storage, "data/studies")
    arrays = load_dataset(DATA)
    study_def = study_definition(params, spec, arrays)

    # The study's local file is built in a fixed side file, so a killed run leaves nothing a
    # rerun reads: the rerun starts a fresh study and ends with exactly tune.trials trials.
    # Limitation: with the local default, the trials a killed run finished are discarded,
    # not resumed; a study in tune.storage is joined again and resumed.
    storage = Path(f"data/studies/{name}.db")
    partial = storage.with_name(storage.name + ".partial")
    storage.parent.mkdir(parents=True, exist_ok=True)
    # One tune@<name> at a time: a dvc repro killed with kill -9 leaves its stage running
    # (dvc's children are not killed with it), and a rerun must not share its files.
    lock = open(storage.with_name(storage.name + ".lock"), "w")  # noqa: SIM115 (held to exit)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise StageError(
            f"another tune@{name} is still running in this project (a killed dvc repro leaves "
            "its stage running): stop it, or wait for it"
        ) from None
    partial.unlink(missing_ok=True)
    study_name = name
    try:
        if not url and tune.workers == 1:
            study = local_study(say, params, name, study_def, arrays, device, partial)
        else:
            shared = url or sqlite_url(partial)
            study, study_name = shared_study(
                say, params, name, study_def, arrays, device, threads, shared
            )
            if url:  # a SQLite copy of the shared study, for browsing like the local one
                optuna.copy_study(
                    from_study_name=study_name,
                    from_storage=distributed.make_storage(url),
                    to_storage=sqlite_url(partial),
                )
            if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                raise NoTrialCompletedError(
                    f"no trial of {tune.trials} completed for lr in "
                    f"[{tune.lr_low:g}, {tune.lr_high:g}]"
                )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, storage)
    summary = {
        **study_summary(study, tune.lr_low, tune.lr_high),
        "lr_low": tune.lr_low,
        "lr_high": tune.lr_high,
        "torch_threads": threads,
        "device": device.type,
    }
    if url or tune.workers > 1:
        summary |= {"study_name": study_name, "workers": tune.workers}
    write_csv(f"plots/tune/{name}.csv", trial_rows(study), TRIAL_FIELDS)
    write_json(f"metrics/tune/{name}.json", summary)
    say(
        f"best lr {summary['best_lr']:.3g} (value {summary['best_value']:.4f}), "
        f"{summary['complete']} complete, {summary['failed']} failed, on {device.type}"
    )
    if summary["lr_at_edge"]:
        say(f"warning: {edge_warning(summary['best_lr'], tune.lr_low, tune.lr_high)}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python stages/tune.py NAME")
    run_stage(f"tune@{sys.argv[1]}", lambda say: main(say, sys.argv[1]))
