"""End to end: the real DVC pipeline in a temporary git copy of the project, on tiny params.

The tests of this module share one project and run in order: a full ``dvc repro``, then
variants, an interruption and the rerun rules, each judged by the stages DVC runs.
"""

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}
TINY = {
    ("data", "num_samples"): 1000,
    ("train", "epochs"): 2,
    ("train", "seeds"): 2,
    ("tune", "trials"): 4,
    ("tune", "epochs"): 2,
}
ALL_STAGES = {"validate", "generate", "tune@adam", "tune@sorted_adam", "compare", "plot"}


def run(*args, cwd, check=True):
    result = subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{args} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result


def dvc(*args, cwd, check=True):
    return run(sys.executable, "-m", "dvc", *args, cwd=cwd, check=check)


def ran(result):
    return set(re.findall(r"Running stage '([^']+)'", result.stdout + result.stderr))


def edit_params(project, changes):
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for keys, value in changes.items():
        node = params
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def strict_json(path):
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git copy of the project's source (no results), tiny params, after one dvc repro."""
    dest = tmp_path_factory.mktemp("project")
    files = run("git", "ls-files", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    for name in files.stdout.splitlines():
        src = ROOT / name
        if name == "dvc.lock" or name.split("/")[0] in {"metrics", "plots"} or not src.is_file():
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / name)
    edit_params(dest, TINY)
    run("git", "init", "-q", cwd=dest)
    run("git", "add", "-A", cwd=dest)
    run("git", "commit", "-qm", "project", cwd=dest)
    result = dvc("repro", cwd=dest)
    assert ran(result) == ALL_STAGES
    run("git", "add", "-A", cwd=dest)
    run("git", "commit", "-qm", "results", cwd=dest)
    return dest


def test_outputs_of_a_full_repro(project):
    comparison = strict_json(project / "metrics/comparison.json")
    assert set(comparison) == {"adam", "sorted_adam"}
    for name, metrics in comparison.items():
        tune = strict_json(project / f"metrics/tune/{name}.json")
        assert metrics["best_lr"] == tune["best_lr"]
        assert 1e-5 <= tune["best_lr"] <= 1e-1
        assert isinstance(tune["lr_at_edge"], bool) and tune["lr_edge"] in {"low", "high", "none"}
        assert tune["lr_at_edge"] == (tune["lr_edge"] != "none") and tune["device"] == "cpu"
        assert tune["complete"] + tune["failed"] == 4
        assert metrics["seeds"] == 2 and metrics["final_val_loss"] > 0
        rows = (project / f"plots/tune/{name}.csv").read_text().splitlines()
        assert rows[0] == "trial,lr,value,state,fail_reason" and len(rows) == 5
        with sqlite3.connect(project / f"data/studies/{name}.db") as db:
            states = db.execute("select state from trials").fetchall()
        states = [state for (state,) in states]
        assert len(states) == 4 and states.count("COMPLETE") == tune["complete"]
    curves = (project / "plots/curves.csv").read_text().splitlines()
    assert len(curves) == 1 + 2 * 2  # header + epochs x optimizers
    for figure in ("comparison_plot", "accuracy_plot", "tuning_plot"):
        assert (project / f"plots/{figure}.png").read_bytes()[:4] == b"\x89PNG"
    vs = comparison["sorted_adam"]["vs_adam"]
    assert set(vs) == {
        f"{name}_{key}"
        for name in ("final_val_loss", "final_val_acc")
        for key in ("diff", "diff_ci_low", "diff_ci_high", "p")
    }
    assert 0 <= vs["final_val_loss_p"] <= 1 and "test_loss" not in comparison["adam"]
    assert comparison["adam"]["final_val_loss_ci_low"] < comparison["adam"]["final_val_loss"]
    finals = (project / "metrics/comparison_seeds.csv").read_text().splitlines()
    assert len(finals) == 1 + 2 * 2 and finals[1].startswith("adam,0,")
    summary = (project / "plots/summary.md").read_text()
    assert "| `sorted_adam` | adam, sort |" in summary and "Against the published run" in summary
    assert (project / "data/mnist1d.npz").read_bytes()[:2] == b"PK"  # an npz is a zip
    ignored = run("git", "status", "--porcelain", "--ignored", cwd=project).stdout
    assert (
        "data/" in ignored and "data/mnist1d.npz" not in run("git", "ls-files", cwd=project).stdout
    )


def test_metrics_and_plots_surface(project):
    shown = json.loads(dvc("metrics", "show", "--json", cwd=project).stdout)
    data = next(iter(shown.values()))["data"]["metrics/comparison.json"]["data"]
    assert {"adam", "sorted_adam"} <= set(data)
    assert all("final_val_loss" in data[name] for name in ("adam", "sorted_adam"))

    plots = json.loads(dvc("plots", "show", "--json", cwd=project).stdout)
    assert not plots.get("errors")
    loss = plots["data"]["validation_loss"][0]["content"]["data"]["values"]
    assert {row["optimizer"] for row in loss} == {"adam", "sorted_adam"}
    accuracy = plots["data"]["validation_accuracy"][0]["content"]["data"]["values"]
    assert {row["optimizer"] for row in accuracy} == {"adam", "sorted_adam"}
    trials = plots["data"]["tuning_trials"][0]["content"]["data"]["values"]
    assert len(trials) == 2 * 4 and {row["optimizer"] for row in trials} == {"adam", "sorted_adam"}
    assert "layer" in plots["data"]["tuning_trials"][0]["content"]  # failed trials as rules
    for figure in ("comparison_plot", "accuracy_plot", "tuning_plot"):
        assert f"plots/{figure}.png" in plots["data"]
    assert run("git", "diff", "--quiet", "dvc.yaml", cwd=project, check=False).returncode == 0


def test_second_repro_runs_nothing(project):
    assert ran(dvc("repro", cwd=project)) == set()
    assert "up to date" in dvc("status", cwd=project).stdout


def test_experiment_variant_and_metrics_diff(project):
    result = dvc("exp", "run", "-S", "train.epochs=3", cwd=project)
    assert ran(result) == {"validate", "compare", "plot"}
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=project).stdout)
    changes = diff["metrics/comparison.json"]
    for name in ("adam", "sorted_adam"):
        change = changes[f"{name}.final_val_loss"]
        assert change["old"] is not None and change["new"] is not None
        assert change["old"] != change["new"]
    shown = json.dumps(json.loads(dvc("exp", "show", "--json", cwd=project).stdout))
    assert '"epochs": 3' in shown and '"epochs": 2' in shown  # the variant beside the baseline
    run("git", "checkout", "--", ".", cwd=project)
    dvc("checkout", cwd=project)
    assert "up to date" in dvc("status", cwd=project).stdout


def test_misspelt_param_is_refused_naming_the_closest_key(project):
    before = (project / "metrics/comparison.json").read_bytes()
    # DVC itself refuses to set a key that params.yaml lacks...
    result = dvc("exp", "run", "-S", "train.epoch=3", cwd=project, check=False)
    assert result.returncode != 0 and "train.epoch" in result.stdout + result.stderr
    # ...and once one is in the file, the validate stage refuses it though no stage reads it.
    result = dvc("exp", "run", "-S", "+train.epoch=3", cwd=project, check=False)
    assert result.returncode != 0
    assert "validate: error: params: unknown key train.epoch; did you mean train.epochs?" in (
        result.stderr.splitlines()
    )
    assert ran(result) == {"validate"}
    assert (project / "metrics/comparison.json").read_bytes() == before
    run("git", "checkout", "--", ".", cwd=project)
    assert "up to date" in dvc("status", cwd=project).stdout


def test_bad_value_stops_the_stage_before_training(project):
    edit_params(project, {("train", "epochs"): 0})
    try:
        # A single stage, so validate does not run first: the stage's own check stops it,
        # and its earlier outputs survive (they are persist: true).
        result = dvc("repro", "compare", cwd=project, check=False)
    finally:
        run("git", "checkout", "--", "params.yaml", cwd=project)
    assert result.returncode != 0
    message = "params: train.epochs=0 is not allowed; expected an integer >= 1"
    assert any(line.endswith(message) for line in result.stderr.splitlines())
    assert "seed 0" not in result.stdout  # no training started
    assert run("git", "status", "--porcelain", cwd=project).stdout == ""


def test_diverging_trials_fail_cleanly(project):
    edit_params(
        project,
        {
            ("tune", "lr_low"): 1.0e3,
            ("tune", "lr_high"): 1.0e5,
            ("optimizers", "adam", "base"): "sgd",
        },
    )
    try:
        result = run(sys.executable, "stages/tune.py", "adam", cwd=project, check=False)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines() == [
            "tune@adam: error: no trial of 4 completed for lr in [1000, 100000]"
        ]
        assert result.stdout.count("failed (non-finite") == 4
    finally:
        run("git", "checkout", "--", "params.yaml", cwd=project)
    # The failed run wrote nothing: the committed outputs are still there and untouched.
    assert run("git", "status", "--porcelain", "metrics", "plots", cwd=project).stdout == ""


def test_kill_during_tuning_then_repro_gives_the_uninterrupted_result(project):
    # A sampler seed not run before, so neither DVC's cache nor its run cache can stand in.
    edit_params(project, {("tune", "sampler_seed"): 11})
    before = {p.name: p.read_bytes() for p in (project / "data/studies").glob("*.db")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro"],
        cwd=project,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    killed = None
    try:
        for line in proc.stdout:
            match = re.match(r"(tune@\w+): trial 0:", line)
            if match:
                os.killpg(proc.pid, signal.SIGKILL)
                killed = match.group(1)
                break
    finally:
        proc.wait(timeout=120)
    assert killed and proc.returncode == -signal.SIGKILL
    name = killed.split("@")[1]
    # killed before it was written: the last run's study file is untouched
    assert (project / f"data/studies/{name}.db").read_bytes() == before[f"{name}.db"]

    result = dvc("repro", cwd=project)
    assert killed in ran(result)
    resumed = strict_json(project / f"metrics/tune/{name}.json")
    with sqlite3.connect(project / f"data/studies/{name}.db") as db:
        states = [state for (state,) in db.execute("select state from trials")]
    assert len(states) == 4 and set(states) <= {"COMPLETE", "FAIL"}
    assert not list((project / "data/studies").glob("*.partial"))

    table = (project / f"plots/tune/{name}.csv").read_bytes()
    uninterrupted = dvc("repro", "-f", "-s", "--no-run-cache", killed, cwd=project)
    assert ran(uninterrupted) == {killed}
    assert strict_json(project / f"metrics/tune/{name}.json") == resumed
    assert (project / f"plots/tune/{name}.csv").read_bytes() == table  # byte for byte
    assert "up to date" in dvc("status", cwd=project).stdout


def test_forced_rerun_is_byte_identical(project):
    """compare here; the tune stages in the interruption test above."""
    outputs = ["metrics/comparison.json", "plots/curves.csv", "plots/seeds.csv"]
    before = {path: (project / path).read_bytes() for path in outputs}
    result = dvc("repro", "--force", "--no-run-cache", "-s", "compare", cwd=project)
    assert ran(result) == {"compare"}
    assert {path: (project / path).read_bytes() for path in outputs} == before


def test_broken_dataset_stops_the_stage_naming_the_file(project):
    data = project / "data/mnist1d.npz"
    original = data.read_bytes()
    data.unlink()  # DVC's cache holds a link to the same bytes: write a new file
    data.write_bytes(original[: len(original) // 3])
    try:
        result = run(sys.executable, "stages/compare.py", cwd=project, check=False)
    finally:
        data.unlink()
        data.write_bytes(original)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("compare: error: data/mnist1d.npz: not a readable npz file")


def test_rerun_rules(project):
    # validate reads the whole file, so it runs on every change of params.yaml.
    edit_params(project, {("train", "epochs"): 3})
    assert ran(dvc("repro", cwd=project)) == {"validate", "compare", "plot"}

    edit_params(project, {("optimizers", "sorted_adam", "transform"): "shuffle"})
    expected = {"validate", "tune@sorted_adam", "compare", "plot"}
    assert ran(dvc("repro", cwd=project)) == expected

    # The protocol changes what tune and compare train on; the dataset stays.
    edit_params(project, {("data", "protocol"): "holdout"})
    status = json.loads(dvc("status", "--json", cwd=project).stdout)
    # plot reads no params: it reruns because compare's outputs change
    assert set(status) == ALL_STAGES - {"generate", "plot"}
    assert ran(dvc("repro", cwd=project)) == ALL_STAGES - {"generate"}
    comparison = strict_json(project / "metrics/comparison.json")
    assert 0 < comparison["adam"]["test_loss"] and 0 <= comparison["adam"]["test_acc"] <= 1
    assert "test_loss_p" in comparison["sorted_adam"]["vs_adam"]
    assert "holdout" in (project / "plots/summary.md").read_text()

    edit_params(project, {("data", "seed"): 7})
    assert ran(dvc("repro", cwd=project)) == ALL_STAGES


def test_removed_optimizer_leaves_no_trace_in_outputs(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    del params["optimizers"]["sorted_adam"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = dvc("repro", cwd=project)
    assert ran(result) == {"validate", "compare", "plot"}
    assert set(strict_json(project / "metrics/comparison.json")) == {"adam"}
    assert "sorted_adam" not in (project / "plots/curves.csv").read_text()
    plots = json.loads(dvc("plots", "show", "--json", cwd=project).stdout)
    assert not plots.get("errors")
    assert not any("sorted_adam" in key for key in plots["data"])
    trials = plots["data"]["tuning_trials"][0]["content"]["data"]["values"]
    assert {row["optimizer"] for row in trials} == {"adam"}


def test_a_second_tune_of_the_same_optimizer_is_refused_while_one_runs(project):
    import fcntl

    with open(project / "data/studies/adam.db.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running tune@adam holds it
        result = run(sys.executable, "stages/tune.py", "adam", cwd=project, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "tune@adam: error: another tune@adam is still running in this project (a killed dvc "
        "repro leaves its stage running): stop it, or wait for it"
    ]


def test_tune_with_two_workers_on_the_local_study_file(project):
    edit_params(project, {("tune", "workers"): 2})
    result = dvc("repro", cwd=project)
    assert ran(result) == {"validate", "tune@adam", "compare", "plot"}
    assert "worker: no trial left waiting" in result.stdout + result.stderr
    tune = strict_json(project / "metrics/tune/adam.json")
    assert tune["workers"] == 2 and tune["study_name"].startswith("gradsort-adam-")
    assert tune["complete"] + tune["failed"] == 4
    with sqlite3.connect(project / "data/studies/adam.db") as db:
        (count,) = db.execute("select count(*) from trials").fetchone()
    assert count == 4
    assert not list((project / "data/studies").glob("*.partial"))


@pytest.mark.skipif(
    not os.environ.get("GRADSORT_TEST_POSTGRES_URL"),
    reason="GRADSORT_TEST_POSTGRES_URL is not set: no PostgreSQL server to test against",
)
def test_tune_on_a_postgresql_study_is_joined_again_by_a_rerun(project):
    url = os.environ["GRADSORT_TEST_POSTGRES_URL"]
    # a fresh study name per run of this test: the fingerprint covers tune.sampler_seed
    seed = int.from_bytes(os.urandom(3), "big")
    edit_params(
        project,
        {("tune", "storage"): "env:GRADSORT_TEST_POSTGRES_URL", ("tune", "sampler_seed"): seed},
    )
    first = dvc("repro", cwd=project)
    assert "tune@adam" in ran(first) and "(created)" in first.stdout
    tune = strict_json(project / "metrics/tune/adam.json")
    assert tune["complete"] + tune["failed"] == 4 and url not in json.dumps(tune)
    again = dvc("repro", "--force", "tune@adam", cwd=project)
    assert "(joined); trials {'complete': " in again.stdout  # finished: nothing to train
    assert strict_json(project / "metrics/tune/adam.json") == tune
    assert url not in (project / "dvc.lock").read_text()
