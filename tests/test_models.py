from __future__ import annotations

import pytest
import torch

from ncf_tune import checkpoint, training
from ncf_tune.config import TrainConfig
from ncf_tune.errors import NcfError
from ncf_tune.models import GMF, MLP, NeuMF, build

NU, NI = 30, 120


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, NU, (64,), generator=g), torch.randint(0, NI, (64,), generator=g)


@pytest.mark.parametrize("name", ["gmf", "mlp", "neumf"])
def test_models_return_one_logit_per_pair(name):
    model = build(name, NU, NI, factors=8, layers=(16, 8, 4))
    out = model(*batch())
    assert out.shape == (64,)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("name", ["gmf", "mlp", "neumf"])
def test_a_scorer_gives_the_logits_forward_gives_in_evaluation(name):
    model = trained(build(name, NU, NI, factors=8, layers=(16, 8, 4), dropout=0.3,
                          biases=True)).eval()
    users, items = batch()
    with torch.no_grad():
        want, got = model(users, items), model.scorer()(users, items)
    if name == "gmf":
        assert torch.equal(got, want)  # the same ops, the norms left out
    else:  # the tower's first layer summed in two halves: float rounding only
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "neumf"])
def test_a_batch_of_distinct_ids_gives_the_logits_and_norms_of_its_rows(name):
    model = trained(build(name, NU, NI, factors=8, layers=(16, 8, 4), biases=True))
    users, items = batch()
    distinct_users, user_of = torch.unique(users, return_inverse=True)
    distinct_items, item_of = torch.unique(items, return_inverse=True)
    assert len(distinct_users) < len(users)  # some rows share a user: the case at stake
    got = model.distinct_logits_and_norms(distinct_users, user_of, distinct_items, item_of)
    for g, want in zip(got, model.logits_and_norms(users, items), strict=True):
        torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-5)


def test_embedding_init_follows_init_std():
    assert GMF(2000, 2000, 16, init_std=0.01).user.weight.std().item() == pytest.approx(0.01, 0.05)
    assert GMF(2000, 2000, 16, init_std=0.1).item.weight.std().item() == pytest.approx(0.1, 0.05)


def trained(model: torch.nn.Module) -> torch.nn.Module:
    """Perturb every weight so a transfer cannot pass by both sides being freshly made."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


def test_neumf_from_pretrained_computes_the_alpha_mix_of_gmf_and_mlp():
    gmf, mlp = trained(GMF(NU, NI, 8)), trained(MLP(NU, NI, (16, 8, 4), dropout=0.2))
    neumf = NeuMF(NU, NI, 8, (16, 8, 4))  # no dropout: a tower trained with it still loads
    mlp.eval()
    neumf.load_pretrained(gmf, mlp, alpha=0.3)
    users, items = batch()
    want = 0.3 * gmf(users, items) + 0.7 * mlp(users, items)
    torch.testing.assert_close(neumf(users, items), want)
    assert torch.equal(neumf.gmf.user.weight, gmf.user.weight)
    assert torch.equal(neumf.mlp.tower.linears[0].bias, mlp.tower.linears[0].bias)


def test_neumf_from_several_parts_computes_the_mix_of_their_means(tmp_path):
    torch.manual_seed(3)
    gmfs = [trained(GMF(NU, NI, 8, biases=True)), trained(GMF(NU, NI, 4))]
    for g in gmfs:  # distinct parts: trained() reseeds, so perturb them apart
        with torch.no_grad():
            g.user.weight.mul_(torch.rand_like(g.user.weight) + 0.5)
    mlps = [trained(MLP(NU, NI, (16, 8, 4), biases=True)), trained(MLP(NU, NI, (8, 6, 2)))]
    with torch.no_grad():
        mlps[1].tower.linears[0].weight.mul_(-1.5)
    configs = [TrainConfig(model="gmf", factors=8, biases=True),
               TrainConfig(model="gmf", factors=4),
               TrainConfig(model="mlp", layers=(16, 8, 4), biases=True),
               TrainConfig(model="mlp", layers=(8, 6, 2))]
    paths = [str(checkpoint.save(tmp_path / f"{i}.pt", part, None, c, 2, NU, NI))
             for i, (part, c) in enumerate(zip(gmfs + mlps, configs, strict=True))]
    cfg = TrainConfig(model="neumf", factors=12, layers=(24, 14, 6), biases=True, alpha=0.6,
                      pretrain_gmf=paths[:2], pretrain_mlp=paths[2:])
    neumf = build("neumf", NU, NI, 12, (24, 14, 6), biases=True)
    checkpoint.load_pretrained(neumf, cfg, NU, NI)
    users, items = batch()
    want = (0.6 * (gmfs[0](users, items) + gmfs[1](users, items)) / 2
            + 0.4 * (mlps[0](users, items) + mlps[1](users, items)) / 2)
    torch.testing.assert_close(neumf(users, items), want)
    assert cfg.to_dict()["pretrain_gmf"] == paths[:2]  # a list in best_config.yaml
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg

    with pytest.raises(NcfError, match="factors=8"):  # 8 + 4 factors
        checkpoint.load_pretrained(build("neumf", NU, NI, 8, (24, 14, 6)),
                                   cfg.replace(factors=8), NU, NI)
    with pytest.raises(NcfError, match=r"MLP layers are \[24, 14, 6\]"):
        checkpoint.load_pretrained(build("neumf", NU, NI, 12, (16, 8, 4)),
                                   cfg.replace(layers=(16, 8, 4)), NU, NI)
    deep = checkpoint.save(tmp_path / "deep.pt", MLP(NU, NI, (8, 4)), None,
                           TrainConfig(model="mlp", layers=(8, 4)), 1, NU, NI)
    with pytest.raises(NcfError, match="different depths"):
        checkpoint.load_pretrained(neumf, cfg.replace(pretrain_mlp=(paths[2], str(deep))),
                                   NU, NI)
    with pytest.raises(NcfError, match="one GMF"):
        TrainConfig.from_dict({"model": "mlp", "layers": [16, 8], "pretrain_gmf": paths[:2]})
    with pytest.raises(NcfError, match="a path or a list of paths"):
        TrainConfig.from_dict({"model": "neumf", "pretrain_gmf": 3, "pretrain_mlp": "m.pt"})


def test_pretrained_checkpoints_are_loaded_into_neumf_and_mlp(tmp_path):
    gmf, mlp = trained(GMF(NU, NI, 8)), trained(MLP(NU, NI, (16, 8, 4)))
    gmf_path = checkpoint.save(tmp_path / "gmf.pt", gmf, None, TrainConfig(model="gmf"), 3, NU, NI)
    mlp_path = checkpoint.save(tmp_path / "mlp.pt", mlp, None,
                               TrainConfig(model="mlp", layers=(16, 8, 4)), 3, NU, NI)
    cfg = TrainConfig(model="neumf", factors=8, layers=(16, 8, 4), pretrain_gmf=str(gmf_path),
                      pretrain_mlp=str(mlp_path))
    neumf = build("neumf", NU, NI, 8, (16, 8, 4))
    checkpoint.load_pretrained(neumf, cfg, NU, NI)
    users, items = batch()
    want = 0.5 * gmf(users, items) + 0.5 * mlp(users, items)
    torch.testing.assert_close(neumf(users, items), want)

    mlp_cfg = TrainConfig(model="mlp", layers=(16, 8, 4), pretrain_gmf=str(gmf_path))
    fresh = build("mlp", NU, NI, 8, (16, 8, 4))
    checkpoint.load_pretrained(fresh, mlp_cfg, NU, NI)
    assert torch.equal(fresh.user.weight, gmf.user.weight)

    with pytest.raises(NcfError, match="factors"):
        checkpoint.load_pretrained(build("neumf", NU, NI, 16, (16, 8, 4)),
                                   cfg.replace(factors=16), NU, NI)
    with pytest.raises(NcfError, match="layers"):
        checkpoint.load_pretrained(build("neumf", NU, NI, 8, (16, 8)),
                                   cfg.replace(layers=(16, 8)), NU, NI)
    with pytest.raises(NcfError, match="holds a MLP model"):
        checkpoint.load_pretrained(neumf, cfg.replace(pretrain_gmf=str(mlp_path)), NU, NI)
    with pytest.raises(NcfError, match="users x"):
        checkpoint.load_pretrained(neumf, cfg, NU + 1, NI)


def test_bad_checkpoint_files_are_refused_in_one_line(tmp_path):
    good = checkpoint.save(tmp_path / "good.pt", GMF(NU, NI, 8), None, TrainConfig(model="gmf"),
                           1, NU, NI)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    for path, expect in [(tmp_path / "missing.pt", "not found"), (truncated, "truncated"),
                         (other, "not an ncf_tune checkpoint"), (text, "not a readable")]:
        with pytest.raises(NcfError, match=expect) as err:
            checkpoint.load(path)
        assert "\n" not in str(err.value)


def test_checkpoint_with_shapes_that_do_not_fit_its_config_is_refused(tmp_path):
    path = checkpoint.save(tmp_path / "m.pt", GMF(NU, NI, 8), None,
                           TrainConfig(model="gmf", factors=16), 1, NU, NI)
    cfg = TrainConfig(model="mlp", layers=(32, 8), pretrain_gmf=str(path))
    with pytest.raises(NcfError, match="do not fit"):
        checkpoint.load_pretrained(build("mlp", NU, NI, 8, (32, 8)), cfg, NU, NI)


def test_biases_start_at_zero_and_are_mixed_into_a_pretrained_neumf(tmp_path):
    users, items = batch()
    torch.manual_seed(0)
    plain = GMF(NU, NI, 8)
    torch.manual_seed(0)
    biased = GMF(NU, NI, 8, biases=True)
    torch.testing.assert_close(biased(users, items), plain(users, items))  # zero at the start

    gmf = trained(GMF(NU, NI, 8, biases=True))
    mlp = trained(MLP(NU, NI, (16, 8, 4)))  # no biases: counts as 0 in the mix
    assert not torch.equal(gmf(users, items), plain(users, items))
    gmf_path = checkpoint.save(tmp_path / "gmf.pt", gmf, None,
                               TrainConfig(model="gmf", biases=True), 3, NU, NI)
    mlp_path = checkpoint.save(tmp_path / "mlp.pt", mlp, None,
                               TrainConfig(model="mlp", layers=(16, 8, 4)), 3, NU, NI)
    cfg = TrainConfig(model="neumf", factors=8, layers=(16, 8, 4), biases=True, alpha=0.3,
                      pretrain_gmf=str(gmf_path), pretrain_mlp=str(mlp_path))
    neumf = build("neumf", NU, NI, 8, (16, 8, 4), biases=True)
    checkpoint.load_pretrained(neumf, cfg, NU, NI)
    want = 0.3 * gmf(users, items) + 0.7 * mlp(users, items)
    torch.testing.assert_close(neumf(users, items), want)

    # Dropping the GMF's biases would silently change what NeuMF starts from.
    with pytest.raises(NcfError, match="biases: true"):
        checkpoint.load_pretrained(build("neumf", NU, NI, 8, (16, 8, 4)),
                                   cfg.replace(biases=False), NU, NI)


def test_embedding_norms_include_the_biases():
    users, items = batch()
    model = trained(GMF(NU, NI, 8, biases=True))
    assert model.biases is not None
    want = (model.user(users).square().sum(-1) + model.item(items).square().sum(-1)
            + model.biases.user(users).squeeze(-1) ** 2 + model.biases.item(items).squeeze(-1) ** 2)
    logits, norms = model.logits_and_norms(users, items)
    torch.testing.assert_close(norms, want)
    torch.testing.assert_close(logits, model(users, items))


def test_a_dot_product_gmf_keeps_h_at_ones_under_training_and_hands_it_to_neumf(tmp_path):
    users, items = batch()
    cfg = TrainConfig(model="gmf", factors=8, dot_product=True, biases=True, optimizer="sgd",
                      momentum=0.0, lr=1.0)
    gmf = build("gmf", NU, NI, 8, (), biases=True, dot_product=True)
    opt = training.build_optimizer(gmf, cfg)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(
            gmf(users, items), torch.ones(len(users))).backward()
        opt.step()
    assert torch.equal(gmf.output.weight, torch.ones(1, 8))  # h is not trained
    assert gmf.output.bias.item() != 0  # the global bias is
    assert gmf.biases is not None
    want = ((gmf.user(users) * gmf.item(items)).sum(-1) + gmf.output.bias
            + gmf.biases(users, items)[0])
    torch.testing.assert_close(gmf(users, items), want)  # a plain dot product (+ biases)

    path = checkpoint.save(tmp_path / "gmf.pt", gmf, None, cfg, 3, NU, NI)
    assert checkpoint.load(path).model().output.weight.requires_grad is False
    mlp = trained(MLP(NU, NI, (16, 8, 4)))
    mlp_path = checkpoint.save(tmp_path / "mlp.pt", mlp, None,
                               TrainConfig(model="mlp", layers=(16, 8, 4)), 3, NU, NI)
    neumf_cfg = TrainConfig(model="neumf", factors=8, layers=(16, 8, 4), biases=True,
                            alpha=0.4, pretrain_gmf=str(path), pretrain_mlp=str(mlp_path))
    neumf = build("neumf", NU, NI, 8, (16, 8, 4), biases=True)
    checkpoint.load_pretrained(neumf, neumf_cfg, NU, NI)
    torch.testing.assert_close(neumf(users, items),
                               0.4 * gmf(users, items) + 0.6 * mlp(users, items))


def test_dot_product_is_a_gmf_setting():
    with pytest.raises(NcfError, match="dot_product is a GMF setting"):
        TrainConfig.from_dict({"model": "mlp", "dot_product": True})


@pytest.mark.parametrize("model", [
    GMF(NU, NI, 6, init_std=0.5, biases=True),
    GMF(NU, NI, 6, init_std=0.5, dot_product=True),
    MLP(NU, NI, (12, 6, 3), dropout=0.3, init_std=0.5, biases=True),
    build("neumf", NU, NI, 5, (12, 6, 3), dropout=0.3, init_std=0.5, biases=True),
], ids=["gmf+biases", "mf", "mlp+biases", "neumf+biases"])
def test_item_scores_are_forward_on_every_pair(model):
    trained(model).eval()  # biases and h not at their zeros and ones: each one counts
    users = torch.tensor([3, 0, 7, 3])
    pairs = model(users.repeat_interleave(NI), torch.arange(NI).repeat(len(users)))
    torch.testing.assert_close(model.item_scores(users), pairs.view(len(users), NI))
