"""One Optuna study, its trials computed by many worker processes on Optuna's RDB storage.

The process that creates a study enqueues exactly ``trials`` empty trials (WAITING, no fixed
params). A worker claims waiting trials with the storage's atomic WAITING -> RUNNING
transition, the very step ``Study.ask`` takes, and never creates a trial, so the study ends
with exactly ``trials`` trials however many workers ask at once. TPE samples a claimed
trial's lr at claim time, with the constant liar over the trials still running.

A worker records a heartbeat for the trials it holds; a trial whose worker died goes stale
after ``grace_period`` seconds and ``optuna.storages.fail_stale_trials`` marks it failed,
so it is counted once, as failed, and never trained twice.
"""

import hashlib
import json
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from gradsort.history import DivergedError, History
from gradsort.tune import OBJECTIVES, STARTUP_TRIALS

HEARTBEAT_INTERVAL = 5  # seconds between a worker's heartbeats
GRACE_PERIOD = 30  # seconds without a heartbeat after which a running trial is failed
DEFINITION_ATTR = "gradsort_definition"
ENQUEUED_ATTR = "gradsort_enqueued"  # set once all trials are enqueued
JOIN_WAIT = 30  # seconds a joining process waits for the creator to finish enqueuing
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)


def fingerprint(definition: dict) -> str:
    """A short hash of everything that defines a study (canonical JSON, sha256)."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def study_name(optimizer: str, definition: dict) -> str:
    """The study's name in a shared storage: the optimizer and the definition's fingerprint,
    so experiments that differ in anything that defines the study never share one."""
    return f"gradsort-{optimizer}-{fingerprint(definition)}"


def make_storage(
    url: str,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    grace_period: int = GRACE_PERIOD,
) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage at ``url`` with heartbeats; SQLite waits for its lock."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several processes write one file: wait for the lock instead of failing at once.
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
        )


def _sampler(seed: int | None) -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(
        n_startup_trials=STARTUP_TRIALS, constant_liar=True, seed=seed
    )


def create_or_load(
    storage: optuna.storages.RDBStorage,
    name: str,
    definition: dict,
    trials: int,
    seed: int | None,
) -> tuple[optuna.Study, bool]:
    """The study ``name``: created with ``trials`` waiting trials if it does not exist yet,
    else loaded (its definition must match). Returns the study and whether it was created.

    Creation is atomic in the storage (a unique study name), so of several processes
    starting at once exactly one enqueues the trials.
    """
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction="minimize", sampler=_sampler(seed)
        )
    except optuna.exceptions.DuplicatedStudyError:
        created = False
    else:
        created = True
    if not created:
        study = optuna.load_study(storage=storage, study_name=name, sampler=_sampler(seed))
        wait_until_enqueued(study)
        if study.user_attrs.get(DEFINITION_ATTR) != definition:
            raise ValueError(f"study {name} in this storage was made for another definition")
        return study, False
    study.set_user_attr(DEFINITION_ATTR, definition)
    for _ in range(trials):
        study.enqueue_trial({}, skip_if_exists=False)
    study.set_user_attr(ENQUEUED_ATTR, trials)
    return study, True


class IncompleteStudyError(ValueError):
    """A study whose creator stopped before it had enqueued all its trials."""


def wait_until_enqueued(study: optuna.Study, timeout: float = JOIN_WAIT) -> None:
    """Wait for the creator of ``study`` to finish enqueuing; a study still incomplete after
    ``timeout`` seconds lost its creator, and IncompleteStudyError says how to remove it."""
    deadline = time.monotonic() + timeout
    while ENQUEUED_ATTR not in study.user_attrs:
        if time.monotonic() > deadline:
            raise IncompleteStudyError(
                f"study {study.study_name} is incomplete (its creator stopped while enqueuing "
                f"its trials): remove it with optuna.delete_study(study_name="
                f"'{study.study_name}', storage=URL) and rerun"
            )
        time.sleep(0.5)


def load(storage: optuna.storages.RDBStorage, name: str, seed: int | None) -> optuna.Study:
    """An existing study and its definition, for a worker that joins it."""
    study = optuna.load_study(storage=storage, study_name=name, sampler=_sampler(seed))
    if DEFINITION_ATTR not in study.user_attrs:
        raise ValueError(f"study {name} has no {DEFINITION_ATTR}; it was not made by gradsort")
    wait_until_enqueued(study)
    return study


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state name (lower case)."""
    result: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        key = trial.state.name.lower()
        result[key] = result.get(key, 0) + 1
    return result


def finished(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def claim(
    study: optuna.Study, storage: optuna.storages.RDBStorage, lr_low: float, lr_high: float
) -> tuple[optuna.Trial, int] | None:
    """Take one waiting trial (atomically, as ``Study.ask`` does) and sample its lr; returns
    it with its storage id, or None when no trial is waiting. Never creates a trial."""
    study_id = storage.get_study_id_from_name(study.study_name)
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
        # The heartbeat comes first: a worker that dies right after the claim still leaves a
        # heartbeat behind, so its trial goes stale instead of running forever.
        storage.record_heartbeat(trial_id)
        try:
            if not storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                continue  # another worker took it
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        trial = optuna.Trial(study, trial_id)
        trial.suggest_float("lr", lr_low, lr_high, log=True)
        return trial, trial_id
    return None


class _Heartbeat:
    """Records a heartbeat for the held trials every ``interval`` seconds, in a thread."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_ids: list[int], interval: int):
        self.storage, self.trial_ids, self.interval = storage, trial_ids, interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            for trial_id in self.trial_ids:
                self.storage.record_heartbeat(trial_id)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()


def work(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    train_wave: Callable[[list[float]], list[History | DivergedError]],
    definition: dict,
    on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
) -> int:
    """Claim waiting trials a wave at a time, train each wave together, tell the results;
    return the number of trials this worker finished when no trial is left waiting.

    A wave is the TPE start-up trials not yet taken (up to STARTUP_TRIALS), else up to
    ``wave_size`` trials, as in ``tune.run_study``; one worker alone therefore proposes the
    very lrs of ``run_study`` with the same sampler seed.
    """
    tune = definition["tune"]
    score = OBJECTIVES[tune["objective"]]
    done = 0
    while True:
        taken = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING, *FINISHED)))
        size = max(tune["wave_size"], STARTUP_TRIALS - taken)
        wave, ids = [], []
        for _ in range(size):
            claimed = claim(study, storage, tune["lr_low"], tune["lr_high"])
            if claimed is None:
                break
            wave.append(claimed[0])
            ids.append(claimed[1])
        if not wave:
            return done
        with _Heartbeat(storage, ids, heartbeat_interval):
            results = train_wave([trial.params["lr"] for trial in wave])
        for trial, result in zip(wave, results):
            if isinstance(result, DivergedError):
                trial.set_user_attr("fail_reason", str(result))
                frozen = study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            else:
                frozen = study.tell(trial, score(result), skip_if_finished=True)
            done += 1
            if on_trial is not None:
                on_trial(frozen)


def wait_until_finished(
    study: optuna.Study,
    trials: int,
    poll: float = 1.0,
    timeout: float | None = None,
    on_wait: Callable[[dict[str, int]], None] | None = None,
) -> None:
    """Block until the study holds ``trials`` finished trials, failing stale ones (trials of
    dead workers) on the way; raises TimeoutError after ``timeout`` seconds."""
    start = time.monotonic()
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        if finished(study) >= trials:
            return
        if timeout is not None and time.monotonic() - start > timeout:
            raise TimeoutError(f"study {study.study_name}: {counts(study)} after {timeout:g} s")
        if on_wait is not None:
            on_wait(counts(study))
        time.sleep(poll)
