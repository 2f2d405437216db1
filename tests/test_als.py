"""optimizer: als, the dot-product GMF trained by implicit alternating least squares."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_ratings, write_dat

from ncf_tune import als, checkpoint, data, training
from ncf_tune import recommend as rec_cli
from ncf_tune import train as train_cli
from ncf_tune.compare import Hits, popularity
from ncf_tune.config import TrainConfig
from ncf_tune.errors import NcfError
from ncf_tune.files import write_yaml_atomic
from ncf_tune.models import GMF

ALS = TrainConfig(model="gmf", factors=8, dot_product=True, optimizer="als", epochs=4,
                  embedding_l2=0.1, unobserved_weight=0.1, init_std=0.1, seed=2)


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> data.Split:
    folder = tmp_path_factory.mktemp("als")
    return data.prepare(write_dat(folder / "ratings.dat", make_ratings(num_users=120)), seed=0)


def test_als_learns_beyond_popularity_and_each_sweep_lowers_its_loss(split):
    result = training.fit(ALS, split)
    losses = [r.loss for r in result.history]
    assert [r.epoch for r in result.history] == [1, 2, 3, 4]
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:], strict=False))
    pop_hr, _ = popularity(split, "validation").means()
    best = result.best("hr")
    # random ranking: HR@10 = 0.1, popularity 0.075 here; the data's groups are learnable
    assert best.hr > max(0.2, pop_hr + 0.1)
    assert result.optimizer is None  # nothing to step: sweeps solve for the weights


def test_each_solve_is_the_exact_minimiser_of_its_rows_loss(split):
    """After the user half-sweep, the loss's gradient in P is zero (the closed form)."""
    torch.manual_seed(0)
    model = GMF(split.num_users, split.num_items, 6, 0.1, dot_product=True)
    sweep = als.Sweeper(model, split.train_users, split.train_items, 0.2, 0.03)
    with torch.no_grad():
        solved, misfit = sweep._solve(sweep.users, model.item.weight, split.num_items)
        model.user.weight.copy_(solved)
    p = model.user.weight.detach().clone().requires_grad_(True)
    q = model.item.weight.detach()
    observed = (p[split.train_users] * q[split.train_items]).sum(-1)
    counts = torch.bincount(split.train_users, minlength=split.num_users)
    loss = ((1 - observed).square().sum() + 0.2 * ((p @ q.T) ** 2).sum()
            + 0.03 * ((counts + 0.2 * split.num_items) * p.square().sum(-1)).sum())
    loss.backward()
    assert p.grad.abs().max() < 1e-3
    assert misfit.item() == pytest.approx((1 - observed).square().sum().item(), rel=1e-4)


def test_one_sweep_is_deterministic_and_the_seed_only_moves_the_start(split):
    a = training.fit(ALS.replace(epochs=1), split).model.state_dict()
    b = training.fit(ALS.replace(epochs=1), split).model.state_dict()
    c = training.fit(ALS.replace(epochs=1, seed=3), split).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["user.weight"], c["user.weight"])


def test_the_checkpoint_is_a_gmf_that_pretrains_neumf_and_recommends(split, tmp_path, capsys):
    rows = make_ratings(num_users=120)
    write_dat(tmp_path / "ratings.dat", rows)
    out = tmp_path / "als"
    summary = train_cli.run(["--model", "gmf", "--data", str(tmp_path / "ratings.dat"),
                             "--optimizer", "als", "--dot-product", "--factors", "8",
                             "--epochs", "2", "--embedding-l2", "0.05",
                             "--unobserved-weight", "0.1", "--out", str(out)])
    assert summary["test_hr"] > 0.2
    ck = checkpoint.load(out / "model.pt", expect_model="gmf")
    assert ck.optimizer_state is None and ck.config.optimizer == "als"
    # retrained from its own config (lr and the rest ignored): the same model
    write_yaml_atomic(tmp_path / "cfg.yaml", ck.config.to_dict())
    again = train_cli.run(["--config", str(tmp_path / "cfg.yaml"), "--data",
                           str(tmp_path / "ratings.dat"), "--out", str(tmp_path / "again")])
    assert (again["test_hr"], again["test_ndcg"]) == (summary["test_hr"], summary["test_ndcg"])
    # a NeuMF starts from it as from any GMF
    mlp = TrainConfig(model="mlp", layers=(8, 4), epochs=1, batch_size=64)
    split_here = data.prepare(str(tmp_path / "ratings.dat"), seed=0)
    trained = training.fit(mlp, split_here).model
    mlp_path = checkpoint.save(tmp_path / "mlp.pt", trained, None, mlp, 1,
                               split_here.num_users, split_here.num_items)
    neumf = TrainConfig(model="neumf", factors=8, layers=(8, 4), epochs=0, alpha=1.0,
                        pretrain_gmf=str(out / "model.pt"), pretrain_mlp=str(mlp_path))
    mixed = training.fit(neumf, split_here)
    gmf_alone = training.evaluate(ck.model(), split_here.validation)
    assert (mixed.history[0].hr, mixed.history[0].ndcg) == pytest.approx(gmf_alone, abs=1e-9)
    # and recommend serves it
    assert rec_cli.main(["--model", str(out / "model.pt"), "--data",
                         str(tmp_path / "ratings.dat"), "--users", str(rows[0, 0]),
                         "--k", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) >= 3


@pytest.mark.parametrize("change,message", [
    ({"model": "mlp"}, "optimizer=als trains a GMF with dot_product: true"),
    ({"dot_product": False}, "optimizer=als trains a GMF with dot_product: true"),
    ({"embedding_l2": 0.0}, "needs embedding_l2 > 0"),
    ({"unobserved_weight": 0.0}, "unobserved_weight=0.0 must be > 0"),
])
def test_als_refuses_what_it_cannot_train_in_one_line(change, message):
    values = {**ALS.to_dict(), **change}
    if change.get("model") == "mlp":
        values.pop("dot_product")
    with pytest.raises(NcfError, match=message):
        TrainConfig.from_dict(values)


def test_batches_cover_every_row_once_with_little_padding():
    rng = np.random.default_rng(0)
    rows = torch.from_numpy(rng.zipf(1.5, 5000) % 300)
    cols = torch.from_numpy(rng.integers(0, 50, 5000))
    side = als._side(rows, cols, 320, 16)  # 20 rows without a partner
    covered = torch.cat([side.order[s:e] for s, e, _ in side.batches])
    assert torch.equal(covered.sort().values, torch.arange(320))
    counts = side.counts[side.order]
    padded = sum((e - s) * w for s, e, w in side.batches)
    assert all(counts[s:e].max() == w for s, e, w in side.batches)
    assert padded <= 2 * counts.sum()


def test_a_neumf_of_als_and_log_loss_parts_mixes_comparable_scores(split, tmp_path):
    """alpha keeps its meaning whatever trained the parts: 1 and 0 give one part's
    ranking exactly, and a part's scale (ALS scores near 0..1, logits near +-10) does
    not move the mix in between."""
    gmf = training.fit(ALS.replace(epochs=2), split).model
    mlp_cfg = TrainConfig(model="mlp", layers=(8, 4), epochs=1, batch_size=64)
    mlp = training.fit(mlp_cfg, split).model
    paths = {"gmf": checkpoint.save(tmp_path / "gmf.pt", gmf, None, ALS, 2, split.num_users,
                                    split.num_items),
             "mlp": checkpoint.save(tmp_path / "mlp.pt", mlp, None, mlp_cfg, 1,
                                    split.num_users, split.num_items)}
    with torch.no_grad():
        gmf.user.weight.mul_(1000.0)  # the same ranking on a 1000x scale
    paths["big"] = checkpoint.save(tmp_path / "big.pt", gmf, None, ALS, 2, split.num_users,
                                   split.num_items)

    def neumf_ranks(alpha: float, gmf_path) -> torch.Tensor:
        cfg = TrainConfig(model="neumf", factors=8, layers=(8, 4), epochs=0, alpha=alpha,
                          pretrain_gmf=str(gmf_path), pretrain_mlp=str(paths["mlp"]))
        return Hits.of(training.fit(cfg, split).model, split.validation).rank

    assert torch.equal(neumf_ranks(1.0, paths["big"]), Hits.of(gmf, split.validation).rank)
    assert torch.equal(neumf_ranks(0.0, paths["gmf"]), Hits.of(mlp, split.validation).rank)
    assert torch.equal(neumf_ranks(0.5, paths["gmf"]), neumf_ranks(0.5, paths["big"]))


def test_a_search_stage_tries_als_beside_sgd_under_ray_tune(tmp_path):
    """The GMF space's ALS family runs as a Tune trial: reports a sweep per epoch,
    checkpoints an ordinary GMF, and can win the stage."""
    import ray

    from ncf_tune import search
    ratings = write_dat(tmp_path / "ratings.dat", make_ratings(num_users=120))
    (tmp_path / "gmf.yaml").write_text(f"""model: gmf
data: {ratings}
params:
  optimizer: {{choice: [sgd, als]}}
  lr: {{by: optimizer, sgd: {{loguniform: [0.1, 1.0]}}, als: 1.0}}
  embedding_l2: {{by: optimizer, sgd: 0.0, als: {{loguniform: [0.05, 0.2]}}}}
  factors: 8
  dot_product: true
  init_std: 0.1
  batch_size: 128
num_samples: 2
max_epochs: 3
searcher:
  points_to_evaluate:
    - {{optimizer: als, lr: 1.0, embedding_l2: 0.1}}
    - {{optimizer: sgd, lr: 0.5, embedding_l2: 0.0}}
scheduler: {{type: none}}
""")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        [summary] = search.run_chain(tmp_path / "gmf.yaml", results_dir=tmp_path / "results",
                                     experiment="exp")
    finally:
        ray.shutdown()
    trials = (tmp_path / "results" / "exp" / "gmf" / "trials.csv").read_text()
    als_rows = [r for r in trials.splitlines() if ",als," in r or r.endswith(",als")]
    assert len(als_rows) == 1 and ",completed," in als_rows[0]
    ck = checkpoint.load(tmp_path / "results" / "exp" / "gmf" / "best_model.pt", "gmf")
    assert ck.config.optimizer == summary.best_config["optimizer"]
    report = (tmp_path / "results" / "exp" / "report.md").read_text()
    assert "- gmf over popularity" in report


def test_a_budgeted_gmf_stage_keeps_its_als_recipe_without_timing_batches(split, tmp_path):
    from pathlib import Path

    from ncf_tune import cost, spaces

    shipped = Path(__file__).resolve().parent.parent / "search_spaces" / "gmf.yaml"
    stage = spaces.parse(shipped)
    assert stage.searcher.points_to_evaluate[0]["optimizer"] == "als"
    kept, dropped = cost.fitting_points(stage, stage.fixed_space(), split, budget_s=60.0)
    assert 0 in kept  # kept, not timed as batches (which crashed: ALS has no optimiser)
    assert len(kept) + len(dropped) == len(stage.searcher.points_to_evaluate)
