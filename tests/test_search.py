"""The whole chain under real Ray Tune, Optuna and ASHA, on tiny generated data."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch
import yaml
from conftest import make_ratings, write_dat

from ncf_tune import checkpoint, cluster, console, data, search, spaces, training
from ncf_tune.errors import NcfError

GMF = """
model: gmf
data: {data}
params:
  factors: 4
  biases: true
  lr: {{loguniform: [1.0e-3, 5.0e-2]}}
  batch_size: 128
num_samples: 4
max_epochs: 4
searcher: {{seed: 1, n_startup_trials: 2}}
scheduler: {{grace_period: 1, reduction_factor: 2}}
"""
MLP = """
model: mlp
data: {data}
params:
  layers: {{choice: [[16, 8], [8, 4]]}}
  lr: {{loguniform: [1.0e-3, 5.0e-2]}}
  lr_schedule: cosine
  batch_size: 128
num_samples: 4
max_epochs: 4
scheduler: {{grace_period: 1, reduction_factor: 2}}
"""
# A learning rate of ~0 keeps NeuMF's weights where pretraining put them, so the
# winner's checkpoint shows what the chain handed down.
NEUMF = """
model: neumf
data: {data}
pretrain: {{gmf: gmf.yaml, mlp: mlp.yaml}}
params:
  lr: {{choice: [1.0e-12, 2.0e-12]}}
  alpha: 0.3
  batch_size: 128
num_samples: 2
max_epochs: 1
scheduler: {{type: none}}
"""


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def chain(tmp_path_factory, ray_local):
    folder = tmp_path_factory.mktemp("search")
    ratings = write_dat(folder / "ratings.dat", make_ratings(num_users=120, num_items=150))
    for name, text in (("gmf", GMF), ("mlp", MLP), ("neumf", NEUMF)):
        (folder / f"{name}.yaml").write_text(text.format(data=ratings))
    summaries = search.run_chain(folder / "neumf.yaml", results_dir=folder / "results",
                                 experiment="exp")
    return folder, folder / "results" / "exp", summaries


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_chain_writes_every_results_file(chain):
    _, exp, summaries = chain
    assert [s.stage for s in summaries] == ["gmf", "mlp", "neumf"]
    for s in summaries:
        folder = exp / s.stage
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["stage"] == s.stage and 0 <= summary["test_ndcg"] <= 1
        assert summary["trial_seconds"] > 0 and summary["wall_seconds"] > 0
        trials = rows(folder / "trials.csv")
        assert len(trials) == summary["trials"]
        best = max(float(r["val_ndcg"]) for r in trials if r["val_ndcg"])
        assert summary["val_ndcg"] == pytest.approx(best, abs=1e-4)  # best epoch of all trials
        ck = checkpoint.load(folder / "best_model.pt", expect_model=summary["model"])
        assert ck.epoch == summary["best_epoch"] and ck.metrics["ndcg"] == summary["val_ndcg"]
        # full ranking ranks against a superset of the 99 sampled negatives: never higher
        assert 0 <= summary["test_full_hr"] <= summary["test_hr"]
        for png in summary["figures"]:  # the report's figures, beside it
            assert (exp / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (exp / "report.md").read_text()
    assert "## gmf (GMF)" in report and "## neumf (NeuMF)" in report
    assert "full ranking" in report and "(gmf/gmf_curves.png)" in report
    # what the gain is worth: popularity on the same split, paired comparisons
    assert "## What the gain is worth" in report and "- Popularity" in report
    assert "the best other stage" in report and "McNemar p = " in report


def test_asha_stops_at_least_one_trial(chain):
    _, exp, _ = chain
    statuses = [r["status"] for stage in ("gmf", "mlp") for r in rows(exp / stage / "trials.csv")]
    assert "stopped early (ASHA)" in statuses
    stopped = [r for r in rows(exp / "gmf" / "trials.csv") if r["status"].startswith("stopped")]
    assert all(int(r["epochs_run"]) < 4 for r in stopped)


def test_neumf_starts_from_the_upstream_winners_weights(chain):
    _, exp, _ = chain
    gmf = checkpoint.load(exp / "gmf" / "best_model.pt").model()
    mlp = checkpoint.load(exp / "mlp" / "best_model.pt").model()
    neumf_ck = checkpoint.load(exp / "neumf" / "best_model.pt")
    neumf = neumf_ck.model()
    assert neumf_ck.config.pretrain_gmf == (str(exp / "gmf" / "best_model.pt"),)
    assert neumf_ck.config.layers == tuple(
        yaml.safe_load((exp / "mlp" / "best_config.yaml").read_text())["layers"])
    close = {"atol": 1e-6, "rtol": 0}
    torch.testing.assert_close(neumf.gmf.user.weight, gmf.user.weight, **close)
    torch.testing.assert_close(neumf.mlp.item.weight, mlp.item.weight, **close)
    torch.testing.assert_close(neumf.mlp.tower.linears[0].weight, mlp.tower.linears[0].weight,
                               **close)
    want = torch.cat([0.3 * gmf.output.weight, 0.7 * mlp.output.weight], dim=-1)
    torch.testing.assert_close(neumf.output.weight, want, **close)
    # The GMF learned biases and the MLP did not: NeuMF takes the GMF's, scaled by alpha.
    assert neumf_ck.config.biases and gmf.biases is not None and mlp.biases is None
    assert gmf.biases.item.weight.abs().sum() > 0
    torch.testing.assert_close(neumf.biases.item.weight, 0.3 * gmf.biases.item.weight, **close)


@pytest.mark.parametrize("stage", ["mlp", "neumf"])  # mlp: a cosine schedule
def test_best_config_retrains_with_ncf_tune_train(chain, tmp_path, stage):
    _, exp, _ = chain
    config = exp / stage / "best_config.yaml"
    p = subprocess.run([sys.executable, "-m", "ncf_tune.train", "--config", str(config),
                        "--out", str(tmp_path / "retrain"), "--json"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.splitlines()[-1])
    summary = json.loads((exp / stage / "summary.json").read_text())
    assert result["model"] == stage and result["epochs"] == summary["best_epoch"]
    written = yaml.safe_load(config.read_text())
    if stage == "mlp":  # the trial's cosine, cut at the winner's best epoch
        assert written["schedule_epochs"] == 4
    assert written["threads"] == 1  # the trial's: bf16 rounds by thread count
    # Same config, same seed, same data: the retrained model scores what the search saw.
    assert result["val_ndcg"] == pytest.approx(summary["val_ndcg"], abs=1e-6)


def test_tensorboard_event_files_hold_hr_ndcg_and_hparams(chain):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, exp, _ = chain
    events = sorted((exp / "gmf" / "tune").glob("*/events.out.tfevents.*"))
    assert len(events) == 4
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {"ray/tune/hr", "ray/tune/ndcg", "ray/tune/loss"} <= set(tags)
    steps = [e.step for e in acc.Scalars("ray/tune/ndcg")]
    assert steps == list(range(1, len(steps) + 1))
    assert "_hparams_/experiment" in acc.summary_metadata


def test_second_run_reuses_upstream_stages(chain, capsys):
    folder, exp, summaries = chain
    (folder / "neumf2.yaml").write_text((folder / "neumf.yaml").read_text()
                                        .replace("alpha: 0.3", "alpha: 0.6"))
    gmf_mtime = (exp / "gmf" / "summary.json").stat().st_mtime_ns
    again = search.run_chain(folder / "neumf2.yaml", results_dir=folder / "results",
                             experiment="exp")
    out = capsys.readouterr().out
    assert "[gmf] reusing" in out and "[mlp] reusing" in out
    assert "[neumf2] up to 2 trials" in out
    assert (exp / "gmf" / "summary.json").stat().st_mtime_ns == gmf_mtime
    assert again[0] == summaries[0]


def test_pretrain_top_builds_neumf_from_the_best_trials_of_each_stage(chain, capsys):
    folder, exp, _ = chain
    (folder / "top2.yaml").write_text((folder / "neumf.yaml").read_text() + "pretrain_top: 2\n")
    search.run_chain(folder / "top2.yaml", results_dir=folder / "results", experiment="exp")
    out = capsys.readouterr().out
    assert "[gmf] reusing" in out and "[mlp] reusing" in out  # they kept their best 3
    assert "built from the 2 best GMFs (4, 4 factors) and the 2 best MLPs" in out
    parts = {}
    for stage in ("gmf", "mlp"):
        tops = json.loads((exp / stage / "summary.json").read_text())["top_models"]
        ndcg = sorted((float(r["val_ndcg"]) for r in rows(exp / stage / "trials.csv")
                       if r["val_ndcg"]), reverse=True)
        assert [t["val_ndcg"] for t in tops] == pytest.approx(ndcg[:3], abs=1e-4)
        assert [t["file"] for t in tops] == ["best_model.pt", "top2_model.pt", "top3_model.pt"]
        parts[stage] = [checkpoint.load(exp / stage / t["file"]) for t in tops[:2]]
        for t, ck in zip(tops, parts[stage], strict=False):
            assert ck.epoch == t["epoch"] and ck.metrics["ndcg"] == t["val_ndcg"]
    neumf_ck = checkpoint.load(exp / "top2" / "best_model.pt")
    cfg = neumf_ck.config
    assert cfg.pretrain_gmf == (str(exp / "gmf" / "best_model.pt"),
                                str(exp / "gmf" / "top2_model.pt"))
    assert cfg.factors == 8 and cfg.layers == tuple(
        a + b for a, b in zip(*(ck.config.layers for ck in parts["mlp"]), strict=True))
    assert yaml.safe_load((exp / "top2" / "best_config.yaml").read_text())["pretrain_mlp"] \
        == [str(exp / "mlp" / "best_model.pt"), str(exp / "mlp" / "top2_model.pt")]
    # lr ~0: the winner still computes 0.3 * mean(GMFs) + 0.7 * mean(MLPs).
    users, items = torch.arange(100) % 120, torch.arange(100) % 150
    gmfs, mlps = ([ck.model().eval() for ck in parts[k]] for k in ("gmf", "mlp"))
    want = (0.3 * sum(g(users, items) for g in gmfs) / 2
            + 0.7 * sum(m(users, items) for m in mlps) / 2)
    torch.testing.assert_close(neumf_ck.model().eval()(users, items), want, atol=1e-5, rtol=0)

    # Results from before pretrain_top kept only their winner: those stages run again.
    old = folder / "results" / "old"
    for stage in ("gmf", "mlp"):
        shutil.copytree(exp / stage, old / stage, ignore=shutil.ignore_patterns("tune"))
        summary = json.loads((old / stage / "summary.json").read_text())
        del summary["top_models"], summary["keep_top"]
        (old / stage / "summary.json").write_text(json.dumps(summary))
    search.run_chain(folder / "top2.yaml", results_dir=folder / "results", experiment="old")
    assert "[gmf] " + str(old / "gmf") + " kept its best 1 model(s), the chain's pretrain_top " \
        "needs 2: searching again" in capsys.readouterr().out
    assert json.loads((old / "gmf" / "summary.json").read_text())["keep_top"] == 3


def test_a_long_stage_prints_progress_between_trial_lines(chain, capsys, monkeypatch):
    # Every result is "long enough" here; by default a line comes after 5 minutes of silence.
    folder, _, _ = chain
    monkeypatch.setattr(console, "PROGRESS_EVERY_S", 0.0)
    search.run_chain(folder / "gmf.yaml", results_dir=folder / "results", experiment="progress")
    lines = [ln for ln in capsys.readouterr().out.splitlines() if " min: " in ln]
    assert lines and all(ln.startswith("[gmf] ") for ln in lines)
    for line in lines:  # the epochs of the running trials include the one reporting
        m = re.search(r"\d+ running \(epochs ([\d, ]+) of 4\), \d+ finished; best so far "
                      r"NDCG@10 0\.\d{4} \(epoch [1-4]\) lr=", line)
        assert m and 1 <= max(int(e) for e in m[1].split(", ")) <= 4, line


def test_a_stage_whose_spec_changed_is_searched_again_and_its_results_kept(
        tmp_path, ray_local, capsys):
    ratings = write_dat(tmp_path / "ratings.dat", make_ratings(num_users=60, num_items=150))
    space = tmp_path / "gmf.yaml"
    space.write_text(GMF.format(data=ratings).replace("num_samples: 4", "num_samples: 1"))
    run = dict(results_dir=tmp_path / "results", experiment="x", max_epochs=1)
    first = search.run_chain(space, **run)[0]
    space.write_text(space.read_text().replace("factors: 4", "factors: 6"))
    second = search.run_chain(space, **run)[0]
    assert second.key != first.key and second.best_config["factors"] == 6
    kept = tmp_path / "results" / "x" / f"gmf.{first.key}"
    assert json.loads((kept / "summary.json").read_text())["key"] == first.key
    assert (kept / "best_model.pt").is_file() and "results moved to" in capsys.readouterr().out
    assert search.run_chain(space, **run)[0] == second  # and the new one is reused as usual


def test_a_space_with_eval_full_chooses_its_winner_by_full_ranking(chain):
    folder, exp, _ = chain
    (folder / "full.yaml").write_text((folder / "gmf.yaml").read_text()
                                      + "eval: full\nnum_samples: 1\n")
    summary = search.run_chain(folder / "full.yaml", results_dir=folder / "results",
                               experiment="full", max_epochs=1)[0]
    assert summary.eval == "full" and summary.best_config["eval"] == "full"
    # the winner's validation score is the full-ranking one, below the sampled one
    ck = checkpoint.load(folder / "results" / "full" / "full" / "best_model.pt")
    sampled = training.evaluate(ck.model(), data.prepare(summary.data).validation)
    assert summary.val_hr == ck.metrics["hr"] < sampled[0]


def test_resources_beyond_the_cluster_are_refused(chain):
    folder, _, _ = chain
    (folder / "big.yaml").write_text((folder / "gmf.yaml").read_text()
                                     + "resources: {cpu: 64}\n")
    with pytest.raises(NcfError, match=r"resources.cpu=64 per trial, but the Ray cluster has 2"):
        search.run_chain(folder / "big.yaml", results_dir=folder / "results", experiment="big")


def test_a_second_search_on_the_same_experiment_is_refused(chain):
    folder, exp, _ = chain
    with cluster.experiment_lock(exp):
        with pytest.raises(NcfError, match="another search is writing to this experiment"):
            search.run_chain(folder / "gmf.yaml", results_dir=folder / "results",
                             experiment="exp")


def test_the_shipped_spaces_run_their_recipes_first(tmp_path, ray_local, capsys):
    """search_spaces/neumf.yaml as shipped, on tiny data, one epoch: `--num-samples 2` runs
    exactly the first two recipes each file lists (NeuMF's at the two best-scored mixes),
    and NeuMF is built from both winners of each upstream stage."""
    ratings = write_dat(tmp_path / "ratings.dat", make_ratings(num_users=60, num_items=150))
    space = Path(__file__).resolve().parent.parent / "search_spaces" / "neumf.yaml"
    gmf_stage, mlp_stage, _ = spaces.load_chain(space)
    summaries = search.run_chain(space, data_source=str(ratings), results_dir=tmp_path,
                                 experiment="shipped", num_samples=2, max_epochs=1)
    tried = {stage: rows(tmp_path / "shipped" / stage / "trials.csv")
             for stage in ("gmf", "mlp", "neumf")}
    gmf_recipes = gmf_stage.searcher.points_to_evaluate[:2]
    assert sorted((r["optimizer"], int(r["factors"])) for r in tried["gmf"]) == sorted(
        (p["optimizer"], p["factors"]) for p in gmf_recipes)
    mlp_recipes = mlp_stage.searcher.points_to_evaluate[:2]
    assert sorted((r["layers"], int(r["num_negatives"])) for r in tried["mlp"]) == sorted(
        (p["layers"], p["num_negatives"]) for p in mlp_recipes)
    seeded = re.search(r"\[neumf\] scored 21 mixes .* recipes start at alpha (.*)",
                       capsys.readouterr().out)
    assert seeded, "the NeuMF stage did not score its mixes before training"
    best_alphas = [float(a) for a in re.findall(r"([0-9.]+) \(NDCG", seeded.group(1))]
    assert sorted(float(r["alpha"]) for r in tried["neumf"]) == pytest.approx(
        sorted(best_alphas), abs=1e-3)
    gmf, mlp, neumf = (s.best_config for s in summaries)
    assert gmf["optimizer"] in {p["optimizer"] for p in gmf_recipes}
    assert gmf["dot_product"] and gmf["biases"]
    assert mlp["embedding_l2"] == 0.01 and mlp["precision"] == neumf["precision"] == "bf16"
    # pretrain_top: 2: NeuMF is both GMFs and both MLPs side by side.
    assert neumf["factors"] == sum(p["factors"] for p in gmf_recipes)
    widths = [[int(w) for w in p["layers"].split(",")] for p in mlp_recipes]
    assert neumf["layers"] == [sum(column) for column in zip(*widths, strict=True)]
    assert len(neumf["pretrain_gmf"]) == len(neumf["pretrain_mlp"]) == 2
    assert neumf["biases"] and neumf["lr"] == 1e-5
