"""Fused (torch.compile) training steps against the eager ones, on tiny generated data.

Each compiled step is compiled once per test process (seconds); the fits after the
first reuse it."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch

from ncf_tune import data, fused, training
from ncf_tune.config import TrainConfig
from ncf_tune.steps import compiled_steps, make_step

# Both have a short last batch (it runs eagerly) and a cosine schedule (the learning rate
# changes every step: one compiled step must serve them all).
MF = TrainConfig(model="gmf", factors=8, dot_product=True, biases=True, init_std=0.1,
                 optimizer="sgd", momentum=0.0, lr=0.5, batch_size=64, epochs=3,
                 embedding_l2=0.01, num_negatives=2, lr_schedule="cosine", seed=1)
MLP = TrainConfig(model="mlp", layers=(16, 8), biases=True, embedding_l2=0.01, lr=0.01,
                  batch_size=64, epochs=3, lr_schedule="cosine", precision="bf16",
                  num_negatives=2, seed=1)
GMF_ADAM = MF.replace(optimizer="adam", lr=0.01)
# fp32: over a whole run, bf16's rounding moves NeuMF's Adam steps apart by more than
# the bound below (its one-batch gradients are checked in bf16 too)
NEUMF = MLP.replace(model="neumf", factors=4, precision="fp32")


def fit(cfg: TrainConfig, split: data.Split, monkeypatch, switch: str) -> training.FitResult:
    monkeypatch.setenv(fused.SWITCH, switch)
    return training.fit(cfg, split)


def compile_seconds(kind: str) -> float:
    step = compiled_steps().get(kind)
    return 0.0 if step is None else step.compile_seconds


def weights(result: training.FitResult) -> dict[str, torch.Tensor]:
    return result.model.state_dict()


@pytest.mark.parametrize("cfg", [MF, MF.replace(biases=False, embedding_l2=0.0,
                                                lr_schedule="constant")],
                         ids=["biases+l2+cosine", "no biases, no l2"])
def test_the_fused_mf_step_trains_as_the_eager_one_and_as_reproducibly(ratings_file,
                                                                         monkeypatch, cfg):
    split = data.prepare(ratings_file, seed=0)
    eager = fit(cfg, split, monkeypatch, "off")
    before = compile_seconds("mf")
    a = fit(cfg, split, monkeypatch, "on")
    step = compiled_steps()["mf"]
    assert not step.failed and step.compile_seconds > before  # this variant compiled
    b = fit(cfg, split, monkeypatch, "on")
    assert all(torch.equal(v, weights(b)[k]) for k, v in weights(a).items())  # same seed
    assert a.history[-1].loss < a.history[0].loss  # it did train
    for k, v in weights(eager).items():  # the same maths; only float rounding differs
        torch.testing.assert_close(weights(a)[k], v, rtol=1e-4, atol=1e-5, msg=k)
    for x, y in zip(a.history, eager.history, strict=True):
        assert x.loss == pytest.approx(y.loss, rel=1e-5)


@pytest.mark.parametrize("cfg, kind", [(MLP, "distinct"), (NEUMF, "distinct"),
                                       (GMF_ADAM, "autograd")],
                         ids=["MLP bf16: distinct users and items", "NeuMF: the same",
                              "GMF with Adam"])
def test_the_fused_autograd_step_trains_as_the_eager_one(ratings_file, monkeypatch, cfg,
                                                         kind):
    split = data.prepare(ratings_file, seed=0)
    eager = fit(cfg, split, monkeypatch, "off")
    before = compile_seconds(kind)
    a = fit(cfg, split, monkeypatch, "on")
    step = compiled_steps()[kind]
    assert not step.failed and step.compile_seconds > before
    assert a.optimizer.defaults["fused"] and not eager.optimizer.defaults["fused"]
    b = fit(cfg, split, monkeypatch, "on")
    assert all(torch.equal(v, weights(b)[k]) for k, v in weights(a).items())  # same seed
    assert a.history[-1].loss < a.history[0].loss
    # Rounding (bf16's most) makes Adam's steps differ a little: after 150 of them the
    # weights are apart by less than half a step.
    for k, v in weights(eager).items():
        assert (weights(a)[k] - v).abs().max() < 0.5 * cfg.lr, k
    for x, y in zip(a.history, eager.history, strict=True):
        assert x.loss == pytest.approx(y.loss, abs=2e-3)

    # One full batch from the same weights: the fused step's gradients are eager's, to
    # float rounding in fp32; with bf16 autocast they are as close to fp32's as eager's
    # are (each path rounds its own intermediates to 8 bits).
    n = cfg.batch_size
    batch = split.train_users[:n], split.train_items[:n], (torch.arange(n) % 3 == 0).float()
    exact = gradients(a.model, cfg.replace(precision="fp32"), False, batch)
    for k, g in gradients(a.model, cfg.replace(precision="fp32"), True, batch).items():
        assert (g - exact[k]).abs().max() <= 1e-5 * exact[k].abs().max(), k
    eager_bf16 = gradients(a.model, cfg.replace(precision="bf16"), False, batch)
    for k, g in gradients(a.model, cfg.replace(precision="bf16"), True, batch).items():
        eager_error = (eager_bf16[k] - exact[k]).abs().max()
        assert (g - exact[k]).abs().max() <= 3 * eager_error + 1e-3 * exact[k].abs().max(), k
    assert not step.failed


def gradients(model: torch.nn.Module, cfg: TrainConfig, fuse: bool, batch: tuple
              ) -> dict[str, torch.Tensor]:
    """The gradients one step of a copy of `model` computes on `batch`."""
    model = copy.deepcopy(model)
    make_step(model, training.build_optimizer(model, cfg), cfg, fuse)(*batch)
    return {k: p.grad for k, p in model.named_parameters() if p.requires_grad}


def test_compiled_dropout_masks_come_from_the_seed(ratings_file, monkeypatch):
    split = data.prepare(ratings_file, seed=0)
    dropout = MLP.replace(dropout=0.2)
    c, d = (fit(dropout, split, monkeypatch, "on") for _ in range(2))
    assert all(torch.equal(v, weights(d)[k]) for k, v in weights(c).items())
    assert not compiled_steps()["distinct"].failed


def test_a_step_that_cannot_compile_runs_eagerly_after_one_line(capsys):
    step = fused.Compiled(lambda x: x.sin() + 1, "a test step")
    x = torch.arange(4.0)
    # No C++ compiler (and no cached build of this step to fall back on)
    with torch._inductor.config.patch({"cpp.cxx": ("/nonexistent/c++",),
                                       "force_disable_caches": True}):
        assert torch.equal(step(x), x.sin() + 1)
        assert torch.equal(step(x), x.sin() + 1)
    assert step.failed
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ncf_tune: a test step runs eagerly")


def test_the_switch_and_when_auto_compiles(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv(fused.SWITCH, raising=False)
    assert fused.wanted(cpu, fused.MIN_STEPS) and not fused.wanted(cpu, fused.MIN_STEPS - 1)
    # a tower's step saves more a batch: it pays back its compiling sooner
    assert fused.MIN_TOWER_STEPS < fused.MIN_STEPS
    assert fused.wanted(cpu, fused.MIN_TOWER_STEPS, tower=True)
    assert not fused.wanted(cpu, fused.MIN_TOWER_STEPS - 1, tower=True)
    # CUDA: eager unless asked for, until compiled GPU steps are measured
    assert not fused.wanted(torch.device("cuda"), 10 * fused.MIN_STEPS)
    monkeypatch.setenv(fused.SWITCH, "on")
    assert fused.wanted(cpu, 1) and fused.wanted(torch.device("cuda"), 1)
    monkeypatch.setenv(fused.SWITCH, "off")
    assert not fused.wanted(cpu, 10 * fused.MIN_STEPS)


def test_a_bad_switch_is_one_line_naming_the_variable(ratings_file, tmp_path):
    env = {**os.environ, fused.SWITCH: "yes"}
    p = subprocess.run([sys.executable, "-m", "ncf_tune.train", "--model", "gmf", "--data",
                        str(ratings_file), "--epochs", "1", "--factors", "4", "--out",
                        str(tmp_path / "run")], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 2
    assert p.stderr == (f"error: environment variable {fused.SWITCH}='yes' is not one of "
                        "auto, on, off; unset it for auto\n")
