"""Reliability at the edges: a stage with no time left is skipped (never run without a
limit), a resumed stage gets its new share, the chain's best model is chosen among
stages validated alike, parts trained on another split are refused, and a full disk
is one line with nothing half-written."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import faults
import pytest
import ray
import torch
from conftest import make_ratings, write_dat
from ray import tune
from test_interrupt import start
from test_search_budget import (
    ray_local,  # noqa: F401  (a module-scoped fixture)
    write_chain,
)
from test_train_cli import train

from ncf_tune import budget, chain, checkpoint, cluster, data, results, spaces, stage
from ncf_tune.config import TrainConfig
from ncf_tune.errors import NcfError
from ncf_tune.models import build
from ncf_tune.trainable import train_ncf

REPO = Path(__file__).resolve().parent.parent


def three_stages(tmp_path: Path) -> list[spaces.Stage]:
    space = write_chain(tmp_path, n=2, epochs=2)
    return spaces.load_chain(space, {})


def test_a_stage_with_no_time_left_gets_none_not_a_limit_of_zero(tmp_path):
    # An upstream stage overran: less is left than the reserve of the stages to run.
    # Tune reads time_budget_s=0 as no limit, so such a stage must not be given 0.
    gmf, mlp, neumf = three_stages(tmp_path)
    split = data.prepare(gmf.data)
    b = budget.Budget("2m", 120.0, time.monotonic() + budget.RESERVE_S / 2)
    assert b.stage_seconds(neumf, [neumf]) == 0.0  # what Tune would have read as unbounded
    assert b.plan(neumf, [neumf], split) is None
    assert "budget left" in b.skip_reason(neumf, [neumf])
    # Spent (the deadline passed): the same.
    late = budget.Budget("2m", 120.0, time.monotonic() - 30)
    assert late.plan(gmf, [gmf, mlp, neumf], split) is None
    # A share under starting a trial and one epoch of the stage is no time either.
    b = budget.Budget("10m", 600.0, time.monotonic() + 300)
    b.epochs["neumf"] = 1e6
    assert b.plan(neumf, [neumf], split) is None
    share = b.plan(gmf, [gmf, mlp, neumf], split)
    assert share is not None and share > b.minimum(gmf)


def test_a_stage_clock_says_it_ended_the_stage_and_takes_a_resumed_share():
    clock = budget.StageClock("k1", 0.0)
    assert not budget.StageClock.ended("k1")
    clock.stop_all()  # Tune's first check starts the clock
    assert clock.stop_all() and budget.StageClock.ended("k1")
    # Tune saves its stopper with its state and restores it with what was left of the
    # old share; a resumed stage's new share takes its place.
    saved = pickle.dumps(budget.StageClock("k2", 100.0))
    assert pickle.loads(saved)._budget == 100.0
    budget.StageClock.resume("k2", 42.0)
    restored = pickle.loads(saved)
    assert restored._budget == restored._timeout_seconds == 42.0
    assert not restored.stop_all() and not budget.StageClock.ended("k2")
    budget.StageClock.resumed.clear()
    budget.StageClock.fired.clear()


def summary(name: str, model: str, val: float, evaluation: str) -> results.StageSummary:
    return results.StageSummary(
        stage=name, model=model, key="k", data="d", data_fingerprint="f", metric="hr",
        winner_trial="t", best_epoch=1, val_hr=val, val_ndcg=val / 2, test_hr=0.5,
        test_ndcg=0.3, trials=1, statuses={"completed": 1}, wall_seconds=1.0,
        trial_seconds=1.0, best_config={"model": model}, eval=evaluation)


def test_the_best_model_is_chosen_among_stages_validated_alike(tmp_path):
    # A sampled HR@10 (1 positive among 100) is far higher than a full-ranking one: a
    # sampled GMF must not beat a full-ranking NeuMF on scores of another scale.
    chain_ = [summary("gmf", "gmf", 0.70, "sampled"), summary("mlp", "mlp", 0.10, "full"),
              summary("neumf", "neumf", 0.12, "full")]
    assert results.best_stage(chain_).stage == "neumf"
    assert results.best_stage(chain_[:2]).stage == "mlp"
    same = [summary("gmf", "gmf", 0.70, "sampled"), summary("neumf", "neumf", 0.65, "sampled")]
    assert results.best_stage(same).stage == "gmf"  # like with like: as before
    report = results.write_report(tmp_path, chain_).read_text()
    assert "Best model of the chain: neumf" in report
    assert "not compared" in report and "gmf" in report.split("not compared")[1].split("\n")[0]
    assert "not compared" not in results.write_report(tmp_path, same).read_text()


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_a_chain_whose_last_stage_has_no_time_skips_it_and_reports_the_rest(tmp_path):
    # The NeuMF stage's one epoch is estimated beyond what is left: it is skipped in one
    # line, the GMF and MLP winners stand, and the report says what was skipped.
    gmf, mlp, neumf = three_stages(tmp_path)
    split = data.prepare(gmf.data)
    b = budget.Budget("10m", 600.0, time.monotonic() + 600)
    b.epochs.update({"gmf": 0.1, "mlp": 0.1, "neumf": 1e6})
    exp = tmp_path / "r" / "e"
    summaries = chain._run_stages([gmf, mlp, neumf], split, exp, None, False, False,
                                  train_ncf, b)
    assert [s.stage for s in summaries] == ["gmf", "mlp"]
    assert not (exp / "neumf").exists()  # never started: no Tune folder, no marker
    report = (exp / "report.md").read_text()
    assert "**Skipped: neumf**" in report and "Best model of the chain" in report
    assert all(s.budget_s and s.budget_s > 0 for s in summaries)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_a_later_stage_its_budget_ends_before_an_epoch_is_skipped_too(tmp_path):
    # The NeuMF stage gets time, but its trials finish no epoch in it (a loaded machine):
    # not a failed search, a skipped stage; its empty Tune folder does not block a rerun.
    gmf, mlp, neumf = three_stages(tmp_path)
    split = data.prepare(gmf.data)
    b = budget.Budget("2m", 120.0, time.monotonic() + 75 + 3 * budget.RESERVE_S)
    b.epochs.update({"gmf": 0.1, "mlp": 0.1, "neumf": 0.1})
    exp = tmp_path / "r" / "e"
    summaries = chain._run_stages([gmf, mlp, neumf], split, exp, None, False, False,
                                  faults.neumf_never_finishes_an_epoch, b)
    assert [s.stage for s in summaries] == ["gmf", "mlp"]
    report = (exp / "report.md").read_text()
    assert "**Skipped: neumf** (its " in report and "ended before any trial finished" in report
    assert not (exp / "neumf" / "tune").exists() and not (exp / "neumf" / "search.json").exists()


def _tiny_trial(config: dict) -> None:
    for step in range(1, 4):
        tune.report({"score": config["x"] * step, "step": step})


@pytest.mark.usefixtures("ray_local")
def test_a_resumed_stage_gets_its_own_callbacks_and_knows_which_trials_had_ended(tmp_path):
    # Tune restores a Tuner's callbacks as pickled copies, so the console's record of
    # trials that ended on their own was never seen: the resumed stage sets its own, and
    # knows which trials ended before the stop.
    folder = str(tmp_path / "t")
    tuner = tune.Tuner(_tiny_trial, param_space={"x": tune.grid_search([1, 2])},
                       run_config=tune.RunConfig(name="tune", storage_path=folder,
                                                 verbose=0))
    grid = tuner.fit()
    ids = {r.metrics["trial_id"] for r in grid}
    restored = tune.Tuner.restore(str(Path(folder) / "tune"), trainable=_tiny_trial)
    ours = tune.Callback()
    stage._set_restored(restored, [ours])
    assert restored._local_tuner._run_config.callbacks == [ours]  # not pickled copies
    assert stage._ended_before(str(Path(folder) / "tune")) == ids
    assert stage._ended_before(str(tmp_path / "nothing")) == set()
    assert ray.is_initialized()


def _part(tmp_path: Path, name: str, cfg: TrainConfig, split: data.Split,
          ids: data.IdMap | None) -> str:
    torch.manual_seed(0)
    model = build(cfg.model, split.num_users, split.num_items, cfg.factors, cfg.layers)
    return str(checkpoint.save(tmp_path / name, model, None, cfg, 1, split.num_users,
                               split.num_items, ids=ids))


def test_a_part_trained_on_another_split_is_refused_the_same_split_accepted(ratings_file,
                                                                             tmp_path):
    # Seed 1's split holds out other validation items than seed 0's: a GMF trained on
    # seed 1 trained on seed 0's validation items, and would inflate a seed-0 NeuMF.
    one = data.prepare(str(ratings_file), seed=1)
    gmf, mlp = TrainConfig(model="gmf", factors=4), TrainConfig(model="mlp", layers=(8, 4))
    parts = {"gmf": _part(tmp_path, "g1.pt", gmf, one, one.ids),
             "mlp": _part(tmp_path, "m1.pt", mlp, one, one.ids)}
    assert checkpoint.load(parts["gmf"]).ids.split_seed == 1
    neumf = ["--model", "neumf", "--data", str(ratings_file), "--factors", "4", "--layers",
             "8,4", "--epochs", "1", "--pretrain-gmf", parts["gmf"], "--pretrain-mlp",
             parts["mlp"]]
    p = train(*neumf, "--seed", "0", "--out", str(tmp_path / "o0"), cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    line = p.stderr.strip().splitlines()
    assert len(line) == 1 and "g1.pt: trained on the seed-1 split" in line[0]
    assert "this run uses its seed-0 split" in line[0]
    p = train(*neumf, "--seed", "1", "--out", str(tmp_path / "o1"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert checkpoint.load(tmp_path / "o1" / "model.pt").ids.split_seed == 1


def test_a_part_from_before_splits_were_recorded_is_checked_on_its_data_alone(ratings_file,
                                                                             tmp_path):
    zero = data.prepare(str(ratings_file), seed=0)
    cfg = TrainConfig(model="gmf", factors=4)
    old = dataclasses.replace(zero.ids, split_seed=None)  # as an older checkpoint has it
    path = _part(tmp_path, "old.pt", cfg, zero, old)
    assert checkpoint.load(path).ids.split_seed is None
    mlp = build("mlp", zero.num_users, zero.num_items, 4, (8, 4))
    checkpoint.load_pretrained(mlp, TrainConfig(model="mlp", layers=(8, 4),
                                                pretrain_gmf=path), zero.num_users,
                               zero.num_items, data.prepare(str(ratings_file), seed=3).ids)
    other = dataclasses.replace(zero.ids, fingerprint="0" * 16, source="elsewhere.csv")
    with pytest.raises(NcfError, match="trained on other data \\(elsewhere.csv"):
        checkpoint.same_split(path, other, zero.ids)
    checkpoint.same_split(path, None, zero.ids)  # a file with no ids at all: as before


def test_a_ray_outside_the_tested_range_is_one_line_before_anything_runs():
    cluster.check_ray_version()  # the installed one: what CI tests
    for other in ("2.59.1", "2.61.0", "3.0.0", "nightly"):
        with pytest.raises(NcfError, match=f"ray {other} is installed; ncf_tune is tested "
                           "with ray>=2.60,<2.61"):
            cluster.check_ray_version(other)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'"ray[tune]{cluster.RAY_VERSIONS}"' in pyproject  # one range, said twice


START = """
from ncf_tune import cluster
from ray._raylet import AuthenticationMode, get_authentication_mode
with cluster.ray_session(None, 1, 0):
    print("token auth:", get_authentication_mode() == AuthenticationMode.TOKEN)
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", [None, "disabled"])
def test_starting_ray_keeps_its_protection_and_its_warning_off_our_console(tmp_path, mode):
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    env["PYTHONPATH"] = str(REPO)
    if mode is not None:
        env["RAY_AUTH_MODE"] = mode
    p = subprocess.run([sys.executable, "-c", START], capture_output=True, text=True,
                       timeout=180, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    console = p.stdout + p.stderr
    assert "Token authentication is" not in console and "WARNING" not in console, console
    if mode is None:  # Ray's default: on, and nothing said
        assert p.stdout.strip() == "token auth: True"
    else:  # turned off by the user: one line of ours says what that means
        assert p.stdout.strip().splitlines() == [
            p.stdout.strip().splitlines()[0], "token auth: False"]
        assert p.stdout.startswith("ray: token authentication is off (RAY_AUTH_MODE=disabled)")


BUDGETED = """
model: gmf
data: {data}
params:
  factors: 8
  batch_size: 64
  lr: {{loguniform: [1.0e-4, 1.0e-2]}}
num_samples: 300
max_epochs: 4
scheduler: {{grace_period: 1, reduction_factor: 2}}
"""


@pytest.mark.slow
def test_a_resumed_budgeted_stage_gets_its_share_anew_and_keeps_asha_stops(tmp_path):
    # Stopped (Ctrl-C) after ASHA has stopped trials; resumed, the stage runs until its
    # new share ends it. The trials ASHA stopped before the stop must not be counted as
    # cut by the time budget, and the console says what the resumed stage was given.
    ratings = write_dat(tmp_path / "ratings.dat", make_ratings(num_users=200, num_items=200))
    space = tmp_path / "gmf.yaml"
    space.write_text(BUDGETED.format(data=ratings))
    results_dir = tmp_path / "results"
    proc = start(space, results_dir, "--time-budget", "90s")
    deadline, seen = time.time() + 150, []
    for line in proc.stdout:
        seen.append(line)
        if "stopped early (ASHA)" in line or time.time() > deadline:
            break
    asha = sum("stopped early (ASHA)" in line for line in seen)
    assert asha >= 1, "".join(seen)
    time.sleep(1)  # into Tune's next snapshot
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    resumed = start(space, results_dir, "--time-budget", "90s", "--resume")
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    assert re.search(r"\[gmf\] resuming the interrupted search in .* with a time budget of "
                     r"\d+ s \(it started with \d+ s\)", out), out
    summary = json.loads((results_dir / "e" / "gmf" / "summary.json").read_text())
    assert summary["trials"] < 300 and summary["statuses"]["cut by the time budget"] >= 1
    assert summary["statuses"]["stopped early (ASHA)"] >= asha
