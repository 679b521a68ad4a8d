"""Workers on one Optuna study: exact trial counts, no trial lost or doubled, dead workers.

The PostgreSQL test needs a server: set GRADSORT_TEST_POSTGRES_URL (``.ci/run`` starts one
on loopback and sets it); without it the test is skipped with that reason.
"""

import math
import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from gradsort import distributed
from gradsort.data import make_dataset, save_dataset
from gradsort.history import History
from gradsort.tune import describe, run_study, sqlite_url, trial_rows
from gradsort.worker import STORAGE_ENV, definition

POSTGRES_ENV = "GRADSORT_TEST_POSTGRES_URL"


def study_definition(arrays, trials=12, epochs=1, wave_size=3):
    data = {
        "num_samples": 400,
        "train_split": 0.8,
        "seed": 1,
        "protocol": "seed",
        "holdout_fraction": 0.2,
    }
    tune = {
        "trials": trials,
        "epochs": epochs,
        "objective": "min",
        "lr_low": 1e-4,
        "lr_high": 1e-1,
        "sampler_seed": 0,
        "wave_size": wave_size,
    }
    optimizer = {"base": "adam", "transform": "sort", "kwargs": {}}
    model = {"hidden_size": 16, "hidden_layers": 1}
    return definition(data, model, 32, tune, optimizer, arrays)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "mnist1d.npz"
    arrays = make_dataset(400, 0.8, seed=1)
    save_dataset(path, arrays)
    return path, arrays


def fake_wave(lrs):
    return [History(val_loss=[abs(math.log10(lr) + 2.5)]) for lr in lrs]


def test_one_worker_proposes_the_lrs_of_run_study(tmp_path, dataset):
    spec = study_definition(dataset[1], trials=15, wave_size=5)
    local = run_study(fake_wave, 15, 1e-4, 1e-1, sampler_seed=0, wave_size=5)
    storage = distributed.make_storage(sqlite_url(tmp_path / "s.db"))
    study, created = distributed.create_or_load(storage, "s", spec, 15, seed=0)
    assert created and distributed.counts(study) == {"waiting": 15}
    assert distributed.work(study, storage, fake_wave, spec) == 15
    assert [t.params["lr"] for t in study.trials] == [t.params["lr"] for t in local.trials]
    assert [t.value for t in study.trials] == [t.value for t in local.trials]
    again, created = distributed.create_or_load(storage, "s", spec, 15, seed=0)
    assert not created and len(again.trials) == 15  # joining adds no trials
    other = study_definition(dataset[1], trials=15, wave_size=4)
    with pytest.raises(ValueError, match="another definition"):
        distributed.create_or_load(storage, "s", other, 15, seed=0)
    assert distributed.study_name("adam", spec) != distributed.study_name("adam", other)


def start_workers(url, name, data_path, n, heartbeat=1):
    env = {**os.environ, STORAGE_ENV: url}
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gradsort.worker",
                "--study",
                name,
                "--data",
                str(data_path),
                "--seed",
                str(seed),
                "--heartbeat",
                str(heartbeat),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for seed in range(n)
    ]


def run_workers_and_check(url, dataset, workers=2, trials=12):
    path, arrays = dataset
    spec = study_definition(arrays, trials=trials, epochs=250)
    name = distributed.study_name("sorted_adam", spec)
    storage = distributed.make_storage(url)
    if name in {s.study_name for s in optuna.get_all_study_summaries(storage)}:
        optuna.delete_study(study_name=name, storage=storage)
    study, created = distributed.create_or_load(storage, name, spec, trials, seed=0)
    assert created
    procs = start_workers(url, name, path, workers)
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * workers, logs
    assert not any("locked" in log.lower() or "Traceback" in log for log in logs), logs
    distributed.wait_until_finished(study, trials, timeout=30)
    # a trial may diverge (fail) at a large lr; it is finished and counted all the same
    done = [set(map(int, re.findall(r"worker: trial (\d+): lr=", log))) for log in logs]
    assert sum(len(d) for d in done) == trials  # no trial told twice...
    assert set().union(*done) == set(range(trials))  # ...and none lost
    # claiming is instant: a worker that starts late may find nothing left, but not all do
    assert sum(1 for d in done if d) >= 2, "the trials were computed by more than one worker"
    trials_now = study.get_trials(deepcopy=False)
    assert len(trials_now) == trials and all(t.state in distributed.FINISHED for t in trials_now)
    complete = [t for t in trials_now if t.state == TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value)
    assert study.best_params["lr"] == best.params["lr"] and 1e-4 <= best.params["lr"] <= 1e-1
    assert len({t.params["lr"] for t in trials_now}) == trials  # workers sample apart


def test_two_workers_share_one_sqlite_file_without_lock_errors(tmp_path, dataset):
    run_workers_and_check(sqlite_url(tmp_path / "shared.db"), dataset, workers=2)


@pytest.mark.skipif(
    not os.environ.get(POSTGRES_ENV),
    reason=f"{POSTGRES_ENV} is not set: no PostgreSQL server to test against",
)
def test_three_workers_on_a_postgresql_server(dataset):
    run_workers_and_check(os.environ[POSTGRES_ENV], dataset, workers=3, trials=15)


def test_a_killed_worker_leaves_its_trials_failed_once(tmp_path, dataset):
    path, arrays = dataset
    trials = 8
    spec = study_definition(arrays, trials=trials, epochs=200, wave_size=2)
    url = sqlite_url(tmp_path / "kill.db")
    storage = distributed.make_storage(url, heartbeat_interval=1, grace_period=3)
    study, _ = distributed.create_or_load(storage, "k", spec, trials, seed=0)
    (victim,) = start_workers(url, "k", path, 1)
    deadline = time.monotonic() + 120
    while not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        assert time.monotonic() < deadline and victim.poll() is None
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    held = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    assert held
    # the survivors: what is left waiting is drained by a fresh worker, the held trials
    # go stale and are failed after the grace period
    distributed.work(study, storage, fake_wave, spec)
    distributed.wait_until_finished(study, trials, poll=0.5, timeout=60)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert len(states) == trials
    assert {n for n, s in states.items() if s == TrialState.FAIL} == set(held)
    assert all(s == TrialState.COMPLETE for n, s in states.items() if n not in held)


def alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except FileNotFoundError:
        return False


def test_a_worker_exits_when_the_stage_that_started_it_dies(tmp_path, dataset):
    path, arrays = dataset
    spec = study_definition(arrays, trials=4, epochs=2000, wave_size=2)
    url = sqlite_url(tmp_path / "orphan.db")
    storage = distributed.make_storage(url)
    study, _ = distributed.create_or_load(storage, "o", spec, 4, seed=0)
    stage = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import os, subprocess, sys, time\n"
                "w = subprocess.Popen([sys.executable, '-m', 'gradsort.worker', "
                f"'--storage', {url!r}, '--study', 'o', '--data', {str(path)!r}, "
                "'--parent', str(os.getpid())])\n"
                "print(w.pid, flush=True)\n"
                "time.sleep(600)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    worker = int(stage.stdout.readline())
    deadline = time.monotonic() + 120
    while not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        assert time.monotonic() < deadline and alive(worker)
        time.sleep(0.2)
    stage.kill()
    stage.wait()
    deadline = time.monotonic() + 10
    while alive(worker):
        assert time.monotonic() < deadline, "the orphaned worker kept running"
        time.sleep(0.1)


def test_a_study_left_incomplete_by_its_creator_is_refused(tmp_path, dataset):
    spec = study_definition(dataset[1], trials=6)
    storage = distributed.make_storage(sqlite_url(tmp_path / "i.db"))
    study = optuna.create_study(storage=storage, study_name="i")
    study.set_user_attr(distributed.DEFINITION_ATTR, spec)
    study.enqueue_trial({})  # then the creator died
    with pytest.raises(distributed.IncompleteStudyError, match="optuna.delete_study"):
        distributed.wait_until_enqueued(study, timeout=1)


def test_a_trial_failed_before_its_lr_was_drawn_is_reported(tmp_path, dataset):
    spec = study_definition(dataset[1], trials=3)
    storage = distributed.make_storage(sqlite_url(tmp_path / "l.db"))
    study, _ = distributed.create_or_load(storage, "l", spec, 3, seed=0)
    study_id = storage.get_study_id_from_name("l")
    lost = storage.get_trial_id_from_study_id_trial_number(study_id, 0)
    storage.set_trial_state_values(lost, state=TrialState.RUNNING)  # claimed, then silence
    storage.set_trial_state_values(lost, state=TrialState.FAIL)  # as fail_stale_trials does
    distributed.work(study, storage, fake_wave, spec)
    rows = trial_rows(study)
    assert rows[0] == {
        "trial": 0,
        "lr": None,
        "value": None,
        "state": "fail",
        "fail_reason": "no heartbeat from its worker",
    }
    assert [r["state"] for r in rows[1:]] == ["complete", "complete"]
    assert describe(study.trials[0]) == "trial 0: lr=none failed (no heartbeat from its worker)"
