"""What keeps large data bounded: a seeded validation sample, the split shared between
processes without a copy, the prepared split cached on disk."""

from __future__ import annotations

import pickle

import torch

from ncf_tune import data, eval_sample, ranking, training
from ncf_tune.models import GMF


def test_validation_on_many_users_is_a_fixed_seeded_sample(ratings_file):
    split = data.prepare(ratings_file, seed=0)
    n = len(split.validation)
    assert eval_sample.user_sample(split.validation, n, 0) is split.validation  # few: all
    a = eval_sample.user_sample(split.validation, 20, seed=0)
    b = eval_sample.user_sample(split.validation, 20, seed=0)
    c = eval_sample.user_sample(split.validation, 20, seed=1)
    assert len(a) == 20 and torch.equal(a.users, b.users) and not torch.equal(a.users, c.users)
    assert len(set(a.users.tolist())) == 20 and a.users.tolist() == sorted(a.users.tolist())
    rows = torch.searchsorted(split.validation.users, a.users)  # users are in order
    assert torch.equal(split.validation.candidates[rows], a.candidates)
    assert "standard error of HR@10 at most 0.0050" in eval_sample.describe(138_000)
    assert eval_sample.describe(6040) == "validation on all 6040 users"


def test_full_ranking_on_a_bounded_user_sample(ratings_file):
    split = data.prepare(ratings_file, seed=0)
    model = GMF(split.num_users, split.num_items, 8)
    every = ranking.FullRanking(split, "test")
    some = ranking.FullRanking(split, "test", max_users=15)
    assert len(some.users) == 15 and len(every.users) == len(split.test)
    pos = torch.searchsorted(every.users, some.users)
    assert torch.equal(every.ranks(model)[pos], some.ranks(model))
    assert training.evaluate_full(model, split) == every(model)  # few users: all of them


def test_a_split_pickles_its_arrays_out_of_band_and_comes_back_without_a_copy(ratings_file):
    # Ray's object store serialises with pickle 5 and keeps out-of-band buffers in shared
    # memory: each trial then maps the same arrays instead of unpickling its own copy.
    split = data.prepare(ratings_file, seed=0)
    buffers = []
    payload = pickle.dumps(split, protocol=5, buffer_callback=buffers.append)
    big = sum(t.numel() * t.element_size() for t in (split.train_users, split.train_items))
    assert len(payload) < big and len(buffers) >= 6
    back = pickle.loads(payload, buffers=buffers)
    assert back.fingerprint == split.fingerprint and back.ids.fingerprint == split.ids.fingerprint
    assert back.train_users.data_ptr() == split.train_users.data_ptr()  # the same memory


def test_the_prepared_split_is_cached_by_content_and_seed(ratings_file, tmp_path, monkeypatch):
    from ncf_tune import cache

    monkeypatch.setenv("NCF_TUNE_CACHE", str(tmp_path / "cache"))
    assert cache.prepare(ratings_file, 0).fingerprint == data.prepare(ratings_file, 0).fingerprint
    assert not (tmp_path / "cache").exists()  # a small source is not cached
    first = cache.prepare(ratings_file, 0, min_bytes=0)
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".npz"  # no temporary left behind
    again = cache.prepare(ratings_file, 0, min_bytes=0)
    fresh = data.prepare(ratings_file, 0)
    for split in (first, again):
        assert split.fingerprint == fresh.fingerprint and split.notes == fresh.notes
        assert split.ids.fingerprint == fresh.ids.fingerprint and split.name == fresh.name
    cache.prepare(ratings_file, 1, min_bytes=0)  # another seed, another entry
    assert len(list((tmp_path / "cache").iterdir())) == 2
    # A changed file is another key; a damaged entry is prepared again and replaced.
    ratings_file.write_text(ratings_file.read_text() + "999::1::5::1\n")
    assert cache.prepare(ratings_file, 0, min_bytes=0).num_users == fresh.num_users + 1
    entries[0].write_bytes(b"not a zip")
    ratings_file.write_text("\n".join(ratings_file.read_text().splitlines()[:-1]) + "\n")
    assert cache.prepare(ratings_file, 0, min_bytes=0).fingerprint == fresh.fingerprint


def test_a_stage_whose_first_report_outlasts_its_budget_still_hands_on_a_model(tmp_path,
                                                                              monkeypatch):
    # The stage's cheapest config (batch 4096) fits its share, so the budget is accepted;
    # its one trial starts with a recipe (batch 1, 16 negatives) whose first epoch takes
    # longer than the whole budget (430k steps of one row: minutes on any CPU). The
    # trial reports what it has at the cut.
    import csv
    import os
    from pathlib import Path

    import ray
    from conftest import make_ratings, write_dat

    from ncf_tune import cost, search

    monkeypatch.setattr(cost, "SLACK", float("inf"))  # start the recipe whatever it costs
    repo = Path(__file__).resolve().parent.parent
    ratings = write_dat(tmp_path / "ratings.dat", make_ratings(num_users=1500, num_items=300))
    space = tmp_path / "gmf.yaml"
    space.write_text(f"""
model: gmf
data: {ratings}
params:
  factors: 64
  num_negatives: 16
  batch_size: {{choice: [1, 4096]}}
  lr: 0.001
num_samples: 1
max_epochs: 5
time_budget: 90s
searcher: {{points_to_evaluate: [{{batch_size: 1}}]}}
""")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(repo),
                                       "NCF_TUNE_COMPILE": "off"}})
    try:
        (summary,) = search.run_chain(space, results_dir=tmp_path / "r", experiment="e")
    finally:
        ray.shutdown()
    folder = tmp_path / "r" / "e" / "gmf"
    assert (folder / "best_model.pt").is_file() and 0 < summary.best_epoch < 1  # cut mid-epoch
    assert summary.statuses["cut by the time budget"] == 1 and 0 < summary.val_hr <= 1
    (row,) = list(csv.DictReader((folder / "trials.csv").open()))
    assert row["status"] == "cut by the time budget"
    assert os.environ.get("NCF_TUNE_COMPILE") is None  # nothing leaked into this process


def test_a_trial_asks_for_the_memory_of_the_stages_largest_config(tmp_path, ratings_file):
    from ncf_tune import memory, sampling, spaces

    space = tmp_path / "gmf.yaml"
    space.write_text(f"model: gmf\ndata: {ratings_file}\nparams:\n"
                     "  factors: {choice: [8, 64]}\n  num_negatives: {randint: [2, 9]}\n")
    (stage,) = spaces.load_chain(space)
    split = data.prepare(ratings_file, seed=0)
    param_space = {**stage.fixed_space(), "model": "gmf", "report_by": 1.0}
    cfg = memory.largest_config(stage, param_space)
    assert (cfg.factors, cfg.num_negatives) == (64, 8)
    need = memory.trial_bytes(cfg, split)
    params = (split.num_users + split.num_items) * 64 + 64 + 1
    rows = len(split.train_users) * 9
    assert need == memory.BASE_BYTES + 16 * params + 16 * len(split.train_users) \
        + memory.ROW_BYTES * rows
    assert memory.stage_request(stage, param_space, split, 2**40) == need
    assert memory.stage_request(stage, param_space, split, 1e6) == 1e6  # capped by the node
    assert memory.stage_request(stage, param_space, split, 0) is None  # no Ray: no request
    # On large data the rows in hand are a chunk's, whatever the epoch's size.
    assert sampling.plan(10**8, 8).chunk_bounds(0)[1] * 9 <= sampling.CHUNK_ROWS


def test_loaded_interactions_are_cached_with_their_fingerprint(ratings_file, tmp_path,
                                                                monkeypatch):
    import numpy as np

    from ncf_tune import cache

    monkeypatch.setenv("NCF_TUNE_CACHE", str(tmp_path / "cache"))
    fresh = data.load(ratings_file)
    first = cache.load(ratings_file, min_bytes=0)
    again = cache.load(ratings_file, min_bytes=0)
    assert len(list((tmp_path / "cache").iterdir())) == 1
    for inter in (first, again):
        assert inter.fingerprint == fresh.fingerprint and inter.source == fresh.source
        assert np.array_equal(inter.users, fresh.users)
        assert np.array_equal(inter.raw_items, fresh.raw_items)
    assert again.__dict__["fingerprint"] == fresh.fingerprint  # read, not recomputed


def test_a_search_on_large_data_reports_in_parts_and_asha_counts_them(tmp_path, monkeypatch):
    # A small split made "large": 200 positives a report, several reports an epoch.
    import csv
    from pathlib import Path

    import ray
    import yaml
    from conftest import make_ratings, write_dat

    from ncf_tune import sampling, search

    monkeypatch.setenv("NCF_TUNE_REPORT_POSITIVES", "200")
    repo = Path(__file__).resolve().parent.parent
    ratings = write_dat(tmp_path / "ratings.dat", make_ratings(num_users=80, num_items=120))
    space = tmp_path / "gmf.yaml"
    space.write_text(f"""
model: gmf
data: {ratings}
params:
  factors: {{choice: [4, 8]}}
  lr: {{loguniform: [1.0e-3, 5.0e-2]}}
  batch_size: 64
num_samples: 3
max_epochs: 2
scheduler: {{grace_period: 2, reduction_factor: 2}}
""")
    parts = sampling.reports_per_epoch(len(data.prepare(ratings).train_users))
    assert parts >= 3
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(repo), "NCF_TUNE_COMPILE": "off",
                                       "NCF_TUNE_REPORT_POSITIVES": "200"}})
    try:
        (summary,) = search.run_chain(space, results_dir=tmp_path / "r", experiment="e")
    finally:
        ray.shutdown()
    folder = tmp_path / "r" / "e" / "gmf"
    progress = []
    for path in (folder / "tune").glob("*/progress.csv"):
        progress.append(list(csv.DictReader(path.open())))
    assert len(progress) == 3
    longest = max(progress, key=len)
    # Every report counts as an evaluation; epochs are fractional between whole ones.
    assert [int(r["evaluations"]) for r in longest] == list(range(1, len(longest) + 1))
    assert len(longest) == 2 * parts  # ASHA's max_t: 2 epochs of reports, not 2 reports
    assert float(longest[0]["epoch"]) == 1 / parts and float(longest[-1]["epoch"]) == 2
    best = yaml.safe_load((folder / "best_config.yaml").read_text())
    assert isinstance(best["epochs"], int) and 1 <= best["epochs"] <= 2
    assert 0 < summary.best_epoch <= 2 and summary.trials == 3


def test_a_recipe_whose_first_report_cannot_fit_the_budget_is_not_started(tmp_path):
    from conftest import make_ratings, write_dat

    from ncf_tune import cost, spaces

    ratings = write_dat(tmp_path / "ratings.dat", make_ratings(num_users=1500, num_items=300))
    space = tmp_path / "gmf.yaml"
    space.write_text(f"""
model: gmf
data: {ratings}
params:
  factors: 8
  num_negatives: 16
  batch_size: {{choice: [1, 4096]}}
searcher: {{points_to_evaluate: [{{batch_size: 1}}, {{batch_size: 4096}}]}}
""")
    (stage,) = spaces.load_chain(space)
    split = data.prepare(ratings)
    # batch 1: 430k one-row steps before the first report, against a 5 s budget
    kept, dropped = cost.fitting_points(stage, {**stage.fixed_space(), "model": "gmf"},
                                        split, budget_s=5.0)
    assert kept == [1] and len(dropped) == 1
    assert dropped[0].startswith("[gmf] recipe batch_size=1 not started: its first report "
                                 "takes about ") and dropped[0].endswith("the stage has 5 s")
    assert cost.fitting_points(stage, {}, split, budget_s=1e6) == ([0, 1], [])
