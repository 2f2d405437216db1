"""mixes.py: a pretrained NeuMF stage scores its alphas before it trains."""

from __future__ import annotations

import pytest
from conftest import make_ratings, write_dat

from ncf_tune import checkpoint, data, mixes, spaces, training
from ncf_tune.config import TrainConfig


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixes")
    split = data.prepare(write_dat(folder / "ratings.dat", make_ratings(num_users=120)), seed=0)
    paths = {}
    for kind, cfg in (("gmf", TrainConfig(model="gmf", factors=8, dot_product=True,
                                          optimizer="als", embedding_l2=0.1, epochs=2)),
                      ("mlp", TrainConfig(model="mlp", layers=(8, 4), epochs=2,
                                          batch_size=64))):
        model = training.fit(cfg, split).model
        paths[kind] = str(checkpoint.save(folder / f"{kind}.pt", model, None, cfg, 2,
                                          split.num_users, split.num_items))
    return folder, split, paths


def test_every_alpha_scores_as_the_neumf_built_with_it(parts):
    _, split, paths = parts
    cfg = TrainConfig(model="neumf", factors=8, layers=(8, 4), epochs=0,
                      pretrain_gmf=paths["gmf"], pretrain_mlp=paths["mlp"])
    scored = mixes.score_alphas(cfg, split, [0.0, 0.3, 0.75, 1.0])
    for alpha, hr, ndcg in scored:
        built = training.fit(cfg.replace(alpha=alpha), split).history[0]
        assert (hr, ndcg) == pytest.approx((built.hr, built.ndcg), abs=1e-9)


def test_the_stage_starts_its_recipes_at_the_best_alphas(parts, capsys):
    folder, split, paths = parts
    (folder / "neumf.yaml").write_text(f"""model: neumf
data: {folder / 'ratings.dat'}
params:
  alpha: {{uniform: [0.0, 1.0]}}
  lr: {{loguniform: [1.0e-6, 1.0e-4]}}
  factors: 8
  layers: 8,4
num_samples: 4
max_epochs: 1
searcher:
  points_to_evaluate:
    - {{alpha: 0.7, lr: 1.0e-5}}
    - {{alpha: 0.6, lr: 2.0e-5}}
    - {{alpha: 0.5, lr: 3.0e-5}}
""")
    stage = spaces.load_chain(folder / "neumf.yaml")[-1]
    stage = stage.__class__(**{**stage.__dict__, "pretrain": {"gmf": "g", "mlp": "m"}})
    assert stage.starts_pretrained
    space = {**stage.fixed_space(), "model": "neumf", "epochs": 1, "pretrain_gmf": paths["gmf"],
             "pretrain_mlp": paths["mlp"]}
    seeded = mixes.seed_best_alphas(stage, split, space)
    cfg = TrainConfig.from_dict({k: v for k, v in space.items()})
    grid = [i / 20 for i in range(21)]
    best = sorted(mixes.score_alphas(cfg, split, grid), key=lambda s: -s[2])[:2]
    points = seeded.searcher.points_to_evaluate
    assert [p["alpha"] for p in points[:2]] == [round(a, 4) for a, _, _ in best]
    assert [p["lr"] for p in points] == [1.0e-5, 2.0e-5, 3.0e-5]  # the recipes, in order
    assert points[2]["alpha"] == 0.5
    assert "scored 21 mixes on validation" in capsys.readouterr().out
    # a stage that does not search alpha over a range is left as it was
    fixed = stage.__class__(**{**stage.__dict__, "params": {
        k: v for k, v in stage.params.items() if k != "alpha"}})
    assert mixes.seed_best_alphas(fixed, split, space) is fixed
