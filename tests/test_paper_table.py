"""benchmarks/paper_table.py on a tiny paper-format split: every row, JSONL, the table."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_paper_split

from ncf_tune.errors import NcfError

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "paper_table.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, timeout=300, cwd=REPO)


def test_paper_table_trains_every_row_and_tabulates_the_runs(tmp_path):
    split = write_paper_split(tmp_path / "split", num_users=50, num_items=120)
    configs = tmp_path / "configs"
    configs.mkdir()
    for row in ("gmf", "mlp", "neumf", "neumf-pre"):
        (configs / f"{row}.yaml").write_text("epochs: 2\nbatch_size: 128\nlr: 0.01\n")
    # a GMF with biases: the pretrained NeuMF must take them (its config does not say)
    (configs / "gmf.yaml").write_text("epochs: 2\nbatch_size: 128\nlr: 0.01\nbiases: true\n")
    runs = tmp_path / "runs.jsonl"
    p = run("--data", str(split), "--configs", str(configs), "--factors", "4",
            "--seeds", "0", "1", "--jsonl", str(runs))
    assert p.returncode == 0, p.stderr
    lines = [json.loads(line) for line in runs.read_text().splitlines()]
    assert [(r["row"], r["seed"]) for r in lines] == [
        (row, seed) for seed in (0, 1) for row in ("gmf", "mlp", "neumf", "neumf-pre")]
    for r in lines:
        # the pretrained NeuMF may keep its untrained mix (epoch 0): it is scored first
        assert r["factors"] == 4 and r["epoch"] in ((0, 1, 2) if r["row"] == "neumf-pre"
                                                    else (1, 2))
        assert 0 <= r["test_ndcg"] <= r["test_hr"] <= 1
    assert lines[0] != lines[4]  # the seed changes the split and the training

    p = run("--table", str(runs))
    assert p.returncode == 0, p.stderr
    rows = [line for line in p.stdout.splitlines() if line.startswith("| ") and " 4 " in line]
    assert [line.split("|")[1].strip() for line in rows] == ["gmf", "mlp", "neumf", "neumf-pre"]
    assert all(" ± " in line for line in rows)  # two seeds: mean ± std


def test_a_missing_config_is_one_line(tmp_path):
    split = write_paper_split(tmp_path / "split", num_users=30, num_items=150)
    p = run("--data", str(split), "--configs", str(tmp_path), "--factors", "4", "--seeds", "0")
    assert p.returncode != 0
    assert p.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'gmf.yaml'}: cannot read (No such file or directory); check the path"]


def test_a_wider_mlp_and_alphas_chosen_on_validation(tmp_path):
    split = write_paper_split(tmp_path / "split", num_users=40, num_items=150)
    configs = tmp_path / "configs"
    configs.mkdir()
    for row in ("gmf", "mlp"):
        (configs / f"{row}.yaml").write_text("epochs: 1\nbatch_size: 128\nlr: 0.01\n")
    (configs / "neumf-pre.yaml").write_text("epochs: 1\nbatch_size: 128\nlr: 0.001\n"
                                            "alpha: [0.2, 0.5, 0.8]\n")
    runs = tmp_path / "runs.jsonl"
    p = run("--data", str(split), "--configs", str(configs), "--factors", "4",
            "--mlp-scale", "2", "--models", "mlp", "neumf-pre", "--seeds", "0",
            "--jsonl", str(runs))
    assert p.returncode == 0, p.stderr
    mlp, neumf = [json.loads(line) for line in runs.read_text().splitlines()]
    assert (mlp["row"], mlp["factors"]) == ("mlp", 8)  # layers 32,16,8
    assert (neumf["row"], neumf["factors"], neumf["mlp_factors"]) == ("neumf-pre", 4, 8)
    # every candidate's untrained mix was scored, and the best one on validation ran
    mixes = {float(line.split("alpha ")[1].split(":")[0]): float(line.rsplit("NDCG ", 1)[1])
             for line in p.stderr.splitlines() if "untrained mix" in line}
    assert sorted(mixes) == [0.2, 0.5, 0.8]
    assert neumf["alpha"] == max(mixes, key=mixes.get)

    p = run("--table", str(runs))
    assert p.returncode == 0, p.stderr
    assert "| neumf-pre | 4 + 8 | 1 |" in p.stdout  # not the paper's model: no paper cell
    assert "| mlp | 8 | 1 |" in p.stdout


def test_a_bad_alpha_candidate_is_one_line(tmp_path):
    split = write_paper_split(tmp_path / "split", num_users=30, num_items=150)
    configs = tmp_path / "configs"
    configs.mkdir()
    for row in ("gmf", "mlp"):
        (configs / f"{row}.yaml").write_text("epochs: 1\n")
    (configs / "neumf-pre.yaml").write_text("alpha: [0.5, 1.5]\n")
    p = run("--data", str(split), "--configs", str(configs), "--factors", "4", "--seeds", "0",
            "--models", "neumf-pre")
    assert p.returncode != 0
    assert p.stderr.strip().splitlines()[-1] == (
        f"error: {configs / 'neumf-pre.yaml'}: alpha=1.5 must be in [0, 1]")


def test_keep_reuses_parts_of_the_same_config_and_refuses_another(tmp_path):
    split = write_paper_split(tmp_path / "split", num_users=30, num_items=150)
    configs = tmp_path / "configs"
    configs.mkdir()
    for row in ("gmf", "mlp", "neumf-pre"):
        (configs / f"{row}.yaml").write_text("epochs: 1\nbatch_size: 128\nlr: 0.01\n")
    keep, runs = tmp_path / "keep", tmp_path / "runs.jsonl"
    common = ("--data", str(split), "--configs", str(configs), "--factors", "4", "--seeds", "0",
              "--keep", str(keep), "--jsonl", str(runs))
    p = run(*common, "--models", "gmf")
    assert p.returncode == 0, p.stderr
    kept = sorted(f.name.split("-seed")[0] for f in keep.iterdir())
    assert kept == ["gmf-4"]
    first = json.loads(runs.read_text())

    p = run(*common, "--models", "neumf-pre")  # reuses the GMF, trains and keeps the MLP
    assert p.returncode == 0, p.stderr
    assert p.stderr.count("reusing") == 1 and "gmf-4 seed 0: reusing" in p.stderr
    assert sorted(f.name.split("-seed")[0] for f in keep.iterdir()) == ["gmf-4", "mlp-4"]
    gmf_line = next(json.loads(x) for x in p.stdout.splitlines() if x.startswith('{"row": "gmf"'))
    assert gmf_line == first  # the kept figures, not a new run
    assert [json.loads(x)["row"] for x in runs.read_text().splitlines()] == ["gmf", "neumf-pre"]

    p = run(*common, "--models", "neumf-pre", "--mlp-scale", "2")  # the same GMF, a wider MLP
    assert p.returncode == 0, p.stderr
    assert "gmf-4 seed 0: reusing" in p.stderr and "mlp-8 seed 0: reusing" not in p.stderr
    assert sorted(f.name.split("-seed")[0] for f in keep.iterdir()) == ["gmf-4", "mlp-4", "mlp-8"]

    (configs / "gmf.yaml").write_text("epochs: 1\nbatch_size: 128\nlr: 0.02\n")
    p = run(*common, "--models", "gmf")
    assert p.returncode != 0
    assert p.stderr.strip().splitlines()[-1].endswith(
        "kept from another config (differs in lr); remove it or pass another --keep folder")


def test_stop_after_keeps_the_part_and_the_next_call_continues_it_exactly(tmp_path):
    split = write_paper_split(tmp_path / "split", num_users=30, num_items=150)
    configs = tmp_path / "configs"
    configs.mkdir()
    # momentum: the optimiser's state must travel with the part cut short
    (configs / "gmf.yaml").write_text("epochs: 3\nbatch_size: 64\nlr: 0.05\noptimizer: sgd\n"
                                      "momentum: 0.9\n")

    def table(keep: Path, *extra: str) -> subprocess.CompletedProcess:
        return run("--data", str(split), "--configs", str(configs), "--factors", "4",
                   "--seeds", "0", "--models", "gmf", "--keep", str(keep),
                   "--jsonl", str(keep / "runs.jsonl"), *extra)

    whole = table(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    keep = tmp_path / "parts"
    for epoch in (1, 2):  # --stop-after 0: one epoch per call
        p = table(keep, "--stop-after", "0")
        assert p.returncode == 3, p.stderr
        assert f"cut short at epoch {epoch} of 3" in p.stderr.splitlines()[-1]
        assert sorted(f.name.split(".", 1)[1] for f in keep.glob("gmf-*")) == [
            "partial-best.pt", "partial.pt"]
        assert not (keep / "runs.jsonl").exists()
    p = table(keep, "--stop-after", "0")  # the last epoch: done, nothing left to stop
    assert p.returncode == 0, p.stderr
    assert "continuing after epoch 2" in p.stderr
    assert [f.name.split(".", 1)[1] for f in keep.glob("gmf-*")] == ["pt"]
    resumed = json.loads((keep / "runs.jsonl").read_text())
    straight = json.loads((tmp_path / "whole" / "runs.jsonl").read_text())
    for r in (resumed, straight):
        r.pop("seconds")
    assert resumed == straight  # the same best epoch, validation and test figures

    (configs / "gmf.yaml").write_text("epochs: 3\nbatch_size: 64\nlr: 0.02\noptimizer: sgd\n")
    p = table(tmp_path / "other", "--stop-after", "0")
    assert p.returncode == 3
    # continued with another config: refused, by name
    (configs / "gmf.yaml").write_text("epochs: 3\nbatch_size: 64\nlr: 0.03\noptimizer: sgd\n")
    p = table(tmp_path / "other")
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1].endswith(
        "cut short with another config (differs in lr); remove it and "
        f"{next((tmp_path / 'other').glob('*partial-best.pt')).name}, or pass another "
        "--keep folder")


def test_stop_after_needs_keep(tmp_path):
    p = run("--data", str(tmp_path), "--stop-after", "5")
    assert p.returncode == 2 and "--stop-after needs --keep DIR" in p.stderr


@pytest.fixture
def paper_table(monkeypatch):
    """The script as a module, for its functions."""
    spec = importlib.util.spec_from_file_location("paper_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "paper_table", module)  # for its dataclasses
    spec.loader.exec_module(module)
    return module


def test_by_factors_overrides_only_its_size(paper_table, tmp_path):
    (tmp_path / "neumf.yaml").write_text(
        "embedding_l2: 0.02\nnum_negatives: 8\nby_factors:\n"
        "  8: {embedding_l2: 0.005}\n  16: {num_negatives: 4, biases: false}\n")
    at = {f: paper_table.row_config(tmp_path, "neumf", f, seed=0)[0] for f in (8, 16, 64)}
    assert (at[8].embedding_l2, at[8].num_negatives) == (0.005, 8)
    assert (at[16].embedding_l2, at[16].num_negatives, at[16].biases) == (0.02, 4, False)
    assert (at[64].embedding_l2, at[64].num_negatives) == (0.02, 8)
    (tmp_path / "neumf.yaml").write_text("by_factors: {eight: {embedding_l2: 0.005}}\n")
    with pytest.raises(NcfError, match="neumf.yaml: by_factors must map factor sizes"):
        paper_table.row_config(tmp_path, "neumf", 8, seed=0)


def test_a_search_best_config_is_a_recipe(paper_table, tmp_path):
    # what `python -m ncf_tune.search` writes, copied in as a recipe: sizes and seed come
    # from the table's options, the data from --data
    (tmp_path / "neumf.yaml").write_text(
        "model: neumf\nfactors: 16\nlayers: [64, 32, 16]\nepochs: 12\nlr: 0.0097\n"
        "lr_schedule: cosine\nschedule_epochs: 12\nseed: 0\ndata: ../shared/data/ml-1m\n"
        "threads: 1\n")
    cfg, _ = paper_table.row_config(tmp_path, "neumf", 8, seed=2)
    assert (cfg.factors, cfg.layers, cfg.seed, cfg.lr) == (8, (32, 16, 8), 2, 0.0097)


def test_every_committed_recipe_set_is_a_valid_config(paper_table):
    # docs/RESULTS.md's table names these recipes; a typo in one would surface only hours
    # into a table run. Load every row at a small and a large size through the script.
    sets = sorted(p.parent for p in (REPO / "benchmarks" / "paper_configs").rglob("gmf.yaml"))
    assert REPO / "benchmarks" / "paper_configs" in sets  # the table's default recipes
    for folder in sets:
        for row in ("gmf", "mlp", "neumf", "neumf-pre"):
            for factors in (8, 64):
                cfg, alphas = paper_table.row_config(folder, row, factors, seed=0)
                assert cfg.factors == factors and cfg.epochs > 0, (folder, row)
                if row == "neumf-pre":
                    assert alphas or cfg.alpha is not None
