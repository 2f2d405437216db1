"""The search's economics and its promises, under real Ray Tune and Optuna on tiny data:
a time budget holds, the searcher learns what the stage picks, --resume continues only
the same search, moved results stay retrainable, and run_chain is a good library citizen."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import faults
import optuna
import pytest
import ray
import yaml
from conftest import make_ratings, write_dat
from ray.tune.search.optuna import OptunaSearch

from ncf_tune import budget, cluster, data, durations, search, spaces
from ncf_tune.config import TrainConfig
from ncf_tune.errors import Interrupted, NcfError

REPO = Path(__file__).resolve().parent.parent

GMF = """
model: gmf
data: {data}
params:
  factors: {{choice: [4, 8]}}
  lr: {{loguniform: [1.0e-3, 5.0e-2]}}
  batch_size: 128
num_samples: {n}
max_epochs: {epochs}
budget_share: {share}
searcher: {{seed: 1, n_startup_trials: 2}}
scheduler: {{grace_period: 2, reduction_factor: 2}}
"""
MLP = """
model: mlp
data: {data}
params:
  layers: {{choice: [[16, 8], [8, 4]]}}
  lr: {{loguniform: [1.0e-3, 5.0e-2]}}
  batch_size: 128
num_samples: {n}
max_epochs: {epochs}
budget_share: {share}
scheduler: {{grace_period: 2, reduction_factor: 2}}
"""
# A NeuMF whose fine-tuning makes it worse (a huge step): its best epoch is epoch 0.
NEUMF = """
model: neumf
data: {data}
pretrain: {{gmf: gmf.yaml, mlp: mlp.yaml}}
params:
  alpha: {{uniform: [0.0, 1.0]}}
  lr: {{choice: [0.5, 1.0]}}
  optimizer: sgd
  momentum: 0.0
  batch_size: 64
num_samples: {n}
max_epochs: 2
budget_share: {share}
scheduler: {{type: none}}
"""


@pytest.fixture(scope="module")
def ray_local():
    # tests/faults.py's trainables must import in the workers
    path = os.pathsep.join([str(REPO / "tests"), str(REPO)])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def write_chain(folder: Path, n: int = 3, epochs: int = 3, shares=(1, 1, 1)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ratings = folder / "ratings.dat"
    if not ratings.exists():
        write_dat(ratings, make_ratings(num_users=80, num_items=120))
    for (name, text), share in zip((("gmf", GMF), ("mlp", MLP), ("neumf", NEUMF)), shares,
                                   strict=True):
        (folder / f"{name}.yaml").write_text(text.format(data=ratings, n=n, epochs=epochs,
                                                         share=share))
    return folder / "neumf.yaml"


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_durations_parse_and_bad_ones_are_refused_at_parse_time(tmp_path):
    assert [durations.parse_duration(t) for t in ("90s", "10m", "2h", "1h30m", "45")] == [
        90, 600, 7200, 5400, 45]
    for bad in ("10 minutes", "m", "-5s", "0"):
        with pytest.raises(ValueError):
            durations.parse_duration(bad)
    p = subprocess.run([sys.executable, "-m", "ncf_tune.search", "--space", "x.yaml",
                        "--time-budget", "ten minutes"], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert p.returncode == 2 and "--time-budget" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_a_stage_that_is_slow_to_finish_gets_less_time_to_search(tmp_path):
    # The last stage has no one after it to absorb an overrun: what scoring its winner
    # will take beyond the reserve comes out of its own share, never below MIN_STAGE_S.
    space = write_chain(tmp_path)
    chain = [spaces.parse(tmp_path / f"{n}.yaml", {}) for n in ("gmf", "mlp", "neumf")]
    b = budget.Budget.start("10m")
    plain = b.stage_seconds(chain[2], chain[2:], left=100.0)
    assert plain == 100.0 - budget.RESERVE_S
    assert b.stage_seconds(chain[2], chain[2:], left=100.0, finish_s=5.0) == plain
    assert b.stage_seconds(chain[2], chain[2:], left=100.0,
                           finish_s=budget.RESERVE_S + 30) == plain - 30
    assert b.stage_seconds(chain[2], chain[2:], left=100.0, finish_s=1e6) == budget.MIN_STAGE_S
    # The estimate: test scoring timed on a few users of the data, scaled to all of them.
    split = data.prepare(spaces.parse(space, {}).data)
    config = {"model": "neumf", "factors": 8, "layers": "16,8", "biases": True}
    estimate = budget.finish_seconds(TrainConfig.from_dict(config), split, probe_users=4)
    assert budget.FINISH_FIXED_S < estimate < budget.FINISH_FIXED_S + 30
    listed = budget.finish_seconds(TrainConfig.from_dict({**config, "layers": [16, 8]}),
                                   split, probe_users=4)
    assert budget.FINISH_FIXED_S < listed < budget.FINISH_FIXED_S + 30


def test_a_budget_too_small_for_one_epoch_is_one_line_before_any_trial(tmp_path):
    space = write_chain(tmp_path)
    p = subprocess.run([sys.executable, "-m", "ncf_tune.search", "--space", str(space),
                        "--time-budget", "20s", "--results", str(tmp_path / "r")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    line = p.stderr.strip().splitlines()
    assert len(line) == 1 and "--time-budget 20s: the gmf stage would get" in line[0]
    assert "give at least" in line[0]
    assert not list((tmp_path / "r").glob("*/gmf"))  # no stage started


def test_the_time_budget_holds_and_every_stage_still_writes_its_results(tmp_path, ray_local):
    # Far more trials and epochs than the budget allows: the budget must end each stage.
    space = write_chain(tmp_path, n=40, epochs=400, shares=(1.5, 1, 1))
    space.write_text(space.read_text() + "time_budget: 120s\n")  # the file's default budget
    started = time.perf_counter()
    summaries = search.run_chain(space, results_dir=tmp_path / "r", experiment="e")
    wall = time.perf_counter() - started
    assert wall <= 120 + 5, wall  # a few seconds of slack for Ray's own bookkeeping
    exp = tmp_path / "r" / "e"
    gmf, mlp, neumf = summaries
    assert sum(s.budget_s for s in summaries) <= 120
    for s in summaries:
        assert (exp / s.stage / "best_model.pt").is_file() and s.budget_s > 0
    assert gmf.trials < 40 and mlp.trials < 40  # their budgets ended them
    assert gmf.statuses["cut by the time budget"] >= 1
    assert sum(int(r["epochs_run"]) for r in rows(exp / "gmf" / "trials.csv")) == \
        gmf.trial_epochs
    report = (exp / "report.md").read_text()
    assert "Time budget 120s" in report and "Best model of the chain" in report
    assert json.loads((exp / "gmf" / "summary.json").read_text())["budget_s"] == gmf.budget_s


def test_the_searcher_learns_each_trials_best_epoch_not_its_last(tmp_path, ray_local):
    # Scores that fall every epoch: each trial's best epoch is its first, its last its
    # worst. TPE must be told the best, which is what the stage picks winners by.
    gmf = write_chain(tmp_path, n=2, epochs=3).parent / "gmf.yaml"
    search.run_chain(gmf, results_dir=tmp_path / "r", experiment="e",
                     trainable=faults.declining_scores)
    tune_dir = tmp_path / "r" / "e" / "gmf" / "tune"
    searcher = OptunaSearch()
    searcher.restore_from_dir(str(tune_dir))
    told = sorted(t.value for t in searcher._ot_study.trials if t.value is not None)
    progress = [list(csv.DictReader(open(p))) for p in tune_dir.glob("*/progress.csv")]
    best = sorted(max(float(r["ndcg"]) for r in p) for p in progress)
    last = sorted(float(p[-1]["ndcg"]) for p in progress)
    assert len(told) == 2 and told == pytest.approx(best)
    assert told != pytest.approx(last)


def test_parallel_trials_obey_max_concurrent_and_tpe_lies_about_running_ones(tmp_path,
                                                                            ray_local):
    # Two CPUs would run two trials at once; the space's max_concurrent: 1 must reach
    # Tune, and the searcher Tune saved must be TPE with the constant liar.
    gmf = write_chain(tmp_path, n=4, epochs=2).parent / "gmf.yaml"
    gmf.write_text(gmf.read_text() + "max_concurrent: 1\n")
    search.run_chain(gmf, results_dir=tmp_path / "r", experiment="e")
    tune_dir = tmp_path / "r" / "e" / "gmf" / "tune"
    spans = sorted((p.parent.joinpath("params.json").stat().st_mtime, p.stat().st_mtime)
                   for p in tune_dir.glob("*/result.json"))
    assert len(spans) == 4
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end - 0.05  # each trial started after the one before it ended
    searcher = OptunaSearch()
    searcher.restore_from_dir(str(tune_dir))
    sampler = searcher._ot_study.sampler
    assert isinstance(sampler, optuna.samplers.TPESampler) and sampler._constant_liar


def test_resume_continues_only_the_same_search(tmp_path, ray_local):
    gmf = write_chain(tmp_path).parent / "gmf.yaml"
    run = {"results_dir": tmp_path / "r", "experiment": "e"}
    search.run_chain(gmf, num_samples=2, max_epochs=1, **run)
    stage_dir = tmp_path / "r" / "e" / "gmf"
    key = json.loads((stage_dir / "summary.json").read_text())["key"]
    # As if the search had been stopped after its trials ran, before it wrote results:
    (stage_dir / "summary.json").unlink()
    (stage_dir / "search.json").write_text(json.dumps({"key": key}))
    with pytest.raises(NcfError, match="--resume: the interrupted search of stage gmf ran "
                       "with other settings"):
        search.run_chain(gmf, resume=True, **run)  # the file's own 3 trials x 3 epochs
    summary = search.run_chain(gmf, num_samples=2, max_epochs=1, resume=True, **run)[0]
    assert summary.key == key and summary.trials == 2


def test_a_stage_moved_aside_keeps_pointing_at_the_models_it_was_built_from(tmp_path,
                                                                           ray_local):
    space = write_chain(tmp_path, n=1, epochs=1)
    run = {"results_dir": tmp_path / "r", "experiment": "e"}
    search.run_chain(space, **run)
    exp = tmp_path / "r" / "e"
    old_gmf = (exp / "gmf" / "best_model.pt").read_bytes()
    gmf_file = tmp_path / "gmf.yaml"
    gmf_file.write_text(gmf_file.read_text().replace("5.0e-2", "4.0e-2"))  # GMF changed
    search.run_chain(space, **run)
    moved = {p.name.split(".")[0]: p for p in exp.iterdir() if "." in p.name
             and p.is_dir()}
    assert set(moved) == {"gmf", "neumf"}  # the MLP stage was reused
    config = yaml.safe_load((moved["neumf"] / "best_config.yaml").read_text())
    assert Path(config["pretrain_gmf"]).parent == moved["gmf"]
    assert Path(config["pretrain_gmf"]).read_bytes() == old_gmf
    summary = json.loads((moved["neumf"] / "summary.json").read_text())
    assert Path(summary["best_config"]["pretrain_gmf"]).parent == moved["gmf"]


def test_a_space_that_names_its_gpu_share_keeps_it(tmp_path):
    chain = spaces.load_chain(write_chain(tmp_path))
    # without resources.gpu: Ray's GPUs shared (tests/test_placement.py), none: CPU trials
    assert [s.gpu for s in cluster.check_resources(chain, {"CPU": 16})] == [0.0, 0.0, 0.0]
    (tmp_path / "g.yaml").write_text((tmp_path / "gmf.yaml").read_text()
                                     + "resources: {cpu: 1, gpu: 0.5}\n")
    asked = cluster.check_resources(spaces.load_chain(tmp_path / "g.yaml"),
                                    {"CPU": 16, "GPU": 1})
    assert asked[0].gpu == 0.5


def test_run_chain_leaves_the_process_as_it_found_it(tmp_path):
    space = write_chain(tmp_path, n=1, epochs=1).parent / "gmf.yaml"
    code = f"""
import os, signal, ray
from ncf_tune import search
before = dict(os.environ)
handler = signal.getsignal(signal.SIGTERM)
search.run_chain({str(space)!r}, results_dir={str(tmp_path / 'r')!r})
changed = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
print("RAY", ray.is_initialized(), "ENV", changed, "TERM", signal.getsignal(signal.SIGTERM)
      is handler)
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=180, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "RAY False ENV [] TERM True" in p.stdout
    assert issubclass(search.SearchInterrupted, Interrupted)
    assert issubclass(search.SearchInterrupted, Exception)  # `except Exception` sees it


def test_importing_the_search_changes_nothing(tmp_path):
    code = ("import os; before = dict(os.environ); import ncf_tune.search; "
            "print(sorted(k for k in os.environ if before.get(k) != os.environ[k]))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert p.stdout.strip() == "[]", p.stdout + p.stderr[-1000:]
