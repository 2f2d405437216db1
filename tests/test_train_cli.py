"""`python -m ncf_tune.train` end to end, as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ncf_tune import checkpoint, data, training
from ncf_tune import train as train_cli
from ncf_tune.config import TrainConfig
from ncf_tune.models import build


def train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ncf_tune.train", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_train_end_to_end_writes_checkpoint_events_and_json(ratings_file, tmp_path):
    out = tmp_path / "run"
    p = train("--model", "gmf", "--data", str(ratings_file), "--epochs", "2", "--factors", "4",
              "--batch-size", "128", "--out", str(out), "--json", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[0].startswith("epoch   1/2  loss") and "val HR@10" in lines[0]
    summary = json.loads(lines[-1])
    assert set(summary) == {"model", "epochs", "epoch", "eval", "val_hr", "val_ndcg", "test_hr",
                            "test_ndcg", "seconds"}
    assert summary["model"] == "gmf" and summary["epochs"] == 2 and summary["eval"] == "sampled"
    assert 0 <= summary["test_hr"] <= 1
    ck = checkpoint.load(out / "model.pt")
    assert ck.config.factors == 4 and ck.epoch == summary["epoch"]
    assert list(out.glob("events.out.tfevents.*"))
    assert json.loads((out / "metrics.json").read_text()) == summary


def test_config_file_with_command_line_override(ratings_file, tmp_path):
    cfg = tmp_path / "best_config.yaml"
    cfg.write_text(yaml.safe_dump({"model": "mlp", "layers": [8, 4], "epochs": 3,
                                   "batch_size": 256, "data": str(ratings_file)}))
    p = train("--config", str(cfg), "--epochs", "1", "--out", str(tmp_path / "o"), "--json",
              cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[-1])["epochs"] == 1
    saved = checkpoint.load(tmp_path / "o" / "model.pt")
    assert saved.config.layers == (8, 4) and not saved.config.biases
    assert "biases.item.weight" not in saved.model_state

    cfg.write_text(cfg.read_text() + "biases: true\n")
    p = train("--config", str(cfg), "--epochs", "1", "--out", str(tmp_path / "b"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    saved = checkpoint.load(tmp_path / "b" / "model.pt")
    assert saved.config.biases and saved.model_state["biases.item.weight"].abs().sum() > 0
    p = train("--config", str(cfg), "--no-biases", "--epochs", "1", "--out",
              str(tmp_path / "c"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert not checkpoint.load(tmp_path / "c" / "model.pt").config.biases


def test_resume_continues_a_finished_run(ratings_file, tmp_path):
    common = ["--model", "gmf", "--data", str(ratings_file), "--factors", "4", "--json"]
    a = train(*common, "--epochs", "1", "--out", str(tmp_path / "a"), cwd=tmp_path)
    b = train(*common, "--epochs", "2", "--resume", str(tmp_path / "a" / "model.pt"),
              "--out", str(tmp_path / "b"), cwd=tmp_path)
    full = train(*common, "--epochs", "2", "--out", str(tmp_path / "c"), cwd=tmp_path)
    assert a.returncode == b.returncode == full.returncode == 0, b.stderr
    assert b.stdout.startswith("epoch   2/2")
    assert json.loads(b.stdout.splitlines()[-1])["test_ndcg"] == \
        json.loads(full.stdout.splitlines()[-1])["test_ndcg"]


def test_neumf_from_two_gmfs_and_two_mlps_scores_their_mean_mix(ratings_file, tmp_path):
    split = data.prepare(str(ratings_file))
    nu, ni = split.num_users, split.num_items
    parts = {"gmf": [], "mlp": []}
    for i, cfg in enumerate([TrainConfig(model="gmf", factors=4, init_std=0.5),
                             TrainConfig(model="gmf", factors=6, init_std=0.5, biases=True),
                             TrainConfig(model="mlp", layers=(8, 4), init_std=0.5),
                             TrainConfig(model="mlp", layers=(12, 6), init_std=0.5)]):
        torch.manual_seed(i)
        model = build(cfg.model, nu, ni, cfg.factors, cfg.layers, init_std=0.5,
                      biases=cfg.biases)
        path = checkpoint.save(tmp_path / f"{i}.pt", model, None, cfg, 1, nu, ni)
        parts[cfg.model].append((str(path), model.eval()))
    p = train("--model", "neumf", "--data", str(ratings_file), "--factors", "10", "--layers",
              "20,10", "--biases", "--alpha", "0.4", "--epochs", "1", "--lr", "1e-12",
              "--pretrain-gmf", *(path for path, _ in parts["gmf"]),
              "--pretrain-mlp", *(path for path, _ in parts["mlp"]),
              "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("epoch   0/1  loss      -")  # the untrained mix, scored first

    class Mix(torch.nn.Module):
        def forward(self, users, items):
            return sum(0.4 / 2 * g(users, items) for _, g in parts["gmf"]) + sum(
                0.6 / 2 * m(users, items) for _, m in parts["mlp"])

    hr, ndcg = training.evaluate(Mix(), split.validation)
    assert f"val HR@10 {hr:.4f}  NDCG@10 {ndcg:.4f}" in p.stdout.splitlines()[0]


@pytest.mark.parametrize("args, expect", [
    (["--batch-size", "0"], "--batch-size: must be at least 1"),
    (["--lr", "0"], "--lr: must be > 0"),
    (["--lr", "-1"], "--lr: must be > 0"),
    (["--num-negatives", "0"], "--num-negatives: must be at least 1"),
    (["--epochs", "0"], "--epochs: must be at least 1"),
    (["--model", "svd"], "invalid choice"),
    (["--bogus"], "unrecognized arguments"),
    (["--data", "/does/not/exist"], "neither ml-100k"),
    (["--layers", "63,8"], "must start with an even size"),
    (["--model", "neumf", "--pretrain-gmf", "missing.pt", "--pretrain-mlp", "m.pt"],
     "checkpoint not found"),
])
def test_bad_input_is_one_line_exit_2(ratings_file, tmp_path, args, expect):
    full = ["--data", str(ratings_file), "--epochs", "1", "--out", str(tmp_path / "o"), *args]
    p = train(*full, cwd=tmp_path)
    assert p.returncode == 2
    assert expect in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def test_bad_config_file_names_the_file_and_key(ratings_file, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: gmf\nlearning_rate: 0.1\n")
    p = train("--config", str(cfg), "--data", str(ratings_file), cwd=tmp_path)
    assert p.returncode == 2
    assert f"{cfg}: unknown key 'learning_rate'" in p.stderr
    cfg.write_text("model: gmf\nbiases: yes please\n")
    p = train("--config", str(cfg), "--data", str(ratings_file), cwd=tmp_path)
    assert p.returncode == 2 and "biases='yes please' is not bool" in p.stderr
    cfg.write_text("model: [gmf\n")
    p = train("--config", str(cfg), cwd=tmp_path)
    assert p.returncode == 2 and "not valid YAML" in p.stderr
    cfg.write_text("model: gmf\nthreads: 0\n")
    p = train("--config", str(cfg), "--data", str(ratings_file), cwd=tmp_path)
    assert p.returncode == 2 and f"{cfg}: threads=0 is not a positive integer" in p.stderr


def test_threads_from_the_command_line_or_a_config_set_torch_threads(ratings_file, tmp_path):
    before = torch.get_num_threads()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: gmf\nfactors: 4\nepochs: 1\nthreads: 5\ndata: {ratings_file}\n")
    try:
        train_cli.run(["--config", str(cfg), "--out", str(tmp_path / "a")])
        assert torch.get_num_threads() == 5
        train_cli.run(["--config", str(cfg), "--threads", "3", "--out", str(tmp_path / "b")])
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_keep_best_holds_and_scores_the_best_validation_epoch(ratings_file, tmp_path):
    common = ["--model", "gmf", "--data", str(ratings_file), "--factors", "8", "--lr", "0.05",
              "--batch-size", "64"]
    best = train_cli.run([*common, "--epochs", "5", "--out", str(tmp_path / "best")])
    last = train_cli.run([*common, "--epochs", "5", "--keep", "last",
                          "--out", str(tmp_path / "last")])
    assert last["epoch"] == 5 and best["epoch"] < 5  # this run peaks early: best is not last
    assert best["val_ndcg"] > last["val_ndcg"]
    split = data.prepare(str(ratings_file))
    for summary, out in ((best, "best"), (last, "last")):
        ck = checkpoint.load(tmp_path / out / "model.pt")
        assert ck.epoch == summary["epoch"]
        assert training.evaluate(ck.model(), split.validation) == (summary["val_hr"],
                                                                   summary["val_ndcg"])
        assert training.evaluate(ck.model(), split.test) == (summary["test_hr"],
                                                             summary["test_ndcg"])
    # The kept weights are exactly a shorter run's, and so is the optimiser state kept
    # with them: resuming from them ends where the uninterrupted run ended.
    short = train_cli.run([*common, "--epochs", str(best["epoch"]), "--out", str(tmp_path / "s"),
                           "--keep", "last"])
    assert short["test_ndcg"] == best["test_ndcg"]
    resumed = train_cli.run([*common, "--epochs", "5", "--keep", "last", "--resume",
                             str(tmp_path / "best" / "model.pt"), "--out", str(tmp_path / "r")])
    assert resumed["test_ndcg"] == last["test_ndcg"]


def test_eval_full_scores_validation_and_test_by_full_ranking(ratings_file, tmp_path):
    summary = train_cli.run(["--model", "gmf", "--data", str(ratings_file), "--factors", "4",
                             "--epochs", "2", "--eval", "full", "--out", str(tmp_path / "o")])
    assert summary["eval"] == "full"
    split = data.prepare(str(ratings_file))
    model = checkpoint.load(tmp_path / "o" / "model.pt").model()
    assert training.evaluate_full(model, split, "validation") == (summary["val_hr"],
                                                                  summary["val_ndcg"])
    assert training.evaluate_full(model, split, "test") == (summary["test_hr"],
                                                            summary["test_ndcg"])


def test_resume_refuses_other_settings_naming_both_values(ratings_file, tmp_path, capsys):
    common = ["--model", "gmf", "--data", str(ratings_file), "--factors", "4",
              "--lr-schedule", "cosine", "--out", str(tmp_path / "o")]
    train_cli.run([*common, "--epochs", "2"])
    capsys.readouterr()
    ckpt = str(tmp_path / "o" / "model.pt")
    other = tmp_path / "other.dat"
    other.write_text(ratings_file.read_text().replace("::5::", "::0::"))  # fewer interactions
    for args, expect in [
        (["--epochs", "2", "--lr", "0.01"], "(lr 0.001 there, 0.01 here)"),
        (["--epochs", "2", "--factors", "8", "--seed", "1"],
         "(factors 4 there, 8 here; seed 0 there, 1 here)"),
        # Growing epochs moves the end of a cosine decay: the steps already taken
        # followed another schedule.
        (["--epochs", "3"], "(schedule_epochs 2 there, 3 here)"),
        (["--epochs", "1"], "it has trained 2 epochs, more than --epochs 1"),
        (["--epochs", "2", "--data", str(other)], "trained on other data"),
    ]:
        assert train_cli.main([*common, *args, "--resume", ckpt]) == 2
        err = capsys.readouterr().err
        assert expect in err and err.startswith(f"error: --resume {ckpt}: "), err
        assert len(err.strip().splitlines()) == 1
    # Growing epochs with the decay's end kept is the same recipe: it runs.
    assert train_cli.main([*common, "--epochs", "3", "--schedule-epochs", "2",
                           "--resume", ckpt]) == 0
