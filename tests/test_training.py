from __future__ import annotations

import math

import pytest
import torch

from ncf_tune import checkpoint, data, mf_sgd, models, sampling, training
from ncf_tune.config import TrainConfig
from ncf_tune.errors import NcfError
from ncf_tune.steps import make_step


def tiny_split(ratings_file) -> data.Split:
    return data.prepare(ratings_file, seed=0)


CFG = TrainConfig(model="neumf", factors=4, layers=(8, 4), epochs=3, batch_size=64,
                  lr=0.01, dropout=0.1, seed=3)


def test_fit_learns_and_reports_every_epoch(ratings_file):
    split = tiny_split(ratings_file)
    seen = []
    result = training.fit(CFG.replace(epochs=6), split, on_epoch=lambda r, s: seen.append(r))
    assert [r.epoch for r in seen] == [1, 2, 3, 4, 5, 6] == [r.epoch for r in result.history]
    assert seen[-1].loss < seen[0].loss
    # the data has group structure: a trained model beats random ranking (HR@10 = 0.1)
    assert max(r.hr for r in seen) > 0.2
    assert result.best("ndcg").ndcg == max(r.ndcg for r in seen)


def test_same_seed_same_weights_other_seed_other_weights(ratings_file):
    split = tiny_split(ratings_file)
    a = training.fit(CFG, split).model.state_dict()
    b = training.fit(CFG, split).model.state_dict()
    c = training.fit(CFG.replace(seed=4), split).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("cfg", [CFG, CFG.replace(lr_schedule="cosine", warmup_epochs=1,
                                                  embedding_l2=0.01)],
                         ids=["constant", "cosine+warmup+embedding_l2"])
def test_resume_from_epoch_k_ends_with_the_same_weights(ratings_file, tmp_path, cfg):
    CFG = cfg  # noqa: N806 - the same body for both schedules
    split = tiny_split(ratings_file)

    def keep(res, state):
        state.save(str(tmp_path / f"epoch{res.epoch}.pt"), {"ndcg": res.ndcg})

    full = training.fit(CFG, split, on_epoch=keep)
    ck = checkpoint.load(tmp_path / "epoch1.pt")
    assert ck.epoch == 1 and ck.optimizer_state is not None and ck.config == CFG
    # What a trial saves carries the data's raw ids, so a search's best_model.pt has them.
    assert ck.ids.fingerprint == split.ids.fingerprint and ck.ids.source == split.ids.source
    assert torch.equal(ck.ids.users, split.ids.users) and len(ck.ids.items) == split.num_items
    resumed = training.fit(CFG, split, resume=ck)
    assert [r.epoch for r in resumed.history] == [2, 3]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.history[-1].ndcg == full.history[-1].ndcg


def test_checkpoint_round_trip(ratings_file, tmp_path):
    split = tiny_split(ratings_file)
    result = training.fit(CFG.replace(epochs=1), split)
    path = checkpoint.save(tmp_path / "m.pt", result.model, result.optimizer, CFG, 1,
                           split.num_users, split.num_items, {"ndcg": 0.5})
    ck = checkpoint.load(path, expect_model="neumf")
    assert ck.ids is None  # saved without ids, as before they were kept: still loads
    assert ck.metrics == {"ndcg": 0.5} and (ck.num_users, ck.num_items) == (
        split.num_users, split.num_items)
    model = ck.model()
    assert training.evaluate(model, split.test) == training.evaluate(result.model, split.test)


def test_a_diverging_run_stops_and_says_so(ratings_file):
    split = tiny_split(ratings_file)
    result = training.fit(CFG.replace(lr=1e30, optimizer="sgd", epochs=5), split)
    assert result.diverged and len(result.history) < 5
    assert result.best() is None or not result.best().diverged


def test_learning_rate_warms_up_then_decays_to_zero():
    cfg = CFG.replace(lr=0.1, epochs=10, warmup_epochs=2, lr_schedule="cosine")
    lrs = [training.learning_rate(cfg, p / 10) for p in range(0, 101)]
    assert lrs[0] < 0.001 and math.isclose(lrs[20], 0.1)  # ramp over two epochs
    assert all(a <= b for a, b in zip(lrs[:20], lrs[1:21], strict=True))
    assert all(a >= b for a, b in zip(lrs[20:], lrs[21:], strict=False))
    assert math.isclose(lrs[60], 0.05) and lrs[100] < 1e-12  # half way: lr/2; end: 0
    flat = CFG.replace(lr=0.1, epochs=10)
    assert {training.learning_rate(flat, p / 3) for p in range(30)} == {0.1}


def test_schedule_epochs_stops_a_longer_schedule_where_told(ratings_file):
    # A search's best_config.yaml: the winner's 2 best epochs of a 4-epoch cosine trial.
    split = tiny_split(ratings_file)
    cosine = CFG.replace(epochs=4, lr_schedule="cosine", dropout=0.0)
    full = training.fit(cosine, split)
    cut = training.fit(cosine.replace(epochs=2, schedule_epochs=4), split)
    short = training.fit(cosine.replace(epochs=2), split)  # what it wrote before
    assert [r.ndcg for r in cut.history] == [r.ndcg for r in full.history[:2]]
    assert [r.loss for r in short.history] != [r.loss for r in full.history[:2]]
    with pytest.raises(NcfError, match="schedule_epochs"):
        TrainConfig.from_dict({"schedule_epochs": -1})


def test_the_optimiser_follows_the_schedule_within_an_epoch(ratings_file):
    split = tiny_split(ratings_file)
    cfg = CFG.replace(epochs=2, lr_schedule="cosine")
    result = training.fit(cfg, split)
    # after the last batch of the last epoch the step is nearly the schedule's end, 0
    assert result.optimizer.param_groups[0]["lr"] < 0.02 * cfg.lr


def test_embedding_l2_keeps_embeddings_small(ratings_file):
    split = tiny_split(ratings_file)
    cfg = CFG.replace(model="gmf", factors=8, epochs=4, init_std=0.1)

    def norm(c: TrainConfig) -> float:
        model = training.fit(c, split).model
        return float(model.user.weight.detach().norm() + model.item.weight.detach().norm())

    assert norm(cfg.replace(embedding_l2=0.1)) < 0.7 * norm(cfg)


def test_bf16_autocast_trains_and_stays_close_to_fp32(ratings_file):
    split = tiny_split(ratings_file)
    cfg = CFG.replace(epochs=4)
    fp32 = training.fit(cfg, split)
    bf16 = training.fit(cfg.replace(precision="bf16"), split)
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    assert bf16.history[-1].loss < bf16.history[0].loss
    assert abs(bf16.history[-1].loss - fp32.history[-1].loss) < 0.05
    assert bf16.history[-1].loss != fp32.history[-1].loss  # autocast really was on


def test_checkpoints_load_from_a_storage_uri(ratings_file, tmp_path):
    from ncf_tune import storage

    split = tiny_split(ratings_file)
    result = training.fit(CFG.replace(epochs=1), split)
    local = checkpoint.save(tmp_path / "m.pt", result.model, None, CFG, 1, split.num_users,
                            split.num_items)
    uri = storage.upload(local, f"file://{tmp_path}/bucket/run/m.pt")
    assert (tmp_path / "bucket" / "run" / "m.pt").read_bytes() == local.read_bytes()
    assert not list((tmp_path / "bucket" / "run").glob("*.tmp"))
    ck = checkpoint.load(uri, expect_model="neumf")
    assert all(torch.equal(ck.model_state[k], v) for k, v in result.model.state_dict().items())
    with pytest.raises(NcfError, match="not found in storage"):
        checkpoint.load(f"file://{tmp_path}/bucket/missing.pt")


def test_a_pretrained_neumf_is_scored_before_it_trains(ratings_file, tmp_path):
    split = tiny_split(ratings_file)
    paths = {}
    for kind, cfg in (("gmf", TrainConfig(model="gmf", factors=4, epochs=2, batch_size=64)),
                      ("mlp", TrainConfig(model="mlp", layers=(8, 4), epochs=2, batch_size=64))):
        trained = training.fit(cfg, split).model
        paths[kind] = str(checkpoint.save(tmp_path / f"{kind}.pt", trained, None, cfg, 2,
                                          split.num_users, split.num_items))
    cfg = CFG.replace(dropout=0.0, epochs=2, pretrain_gmf=paths["gmf"], pretrain_mlp=paths["mlp"])
    mix = training.build("neumf", split.num_users, split.num_items, 4, (8, 4))
    checkpoint.load_pretrained(mix, cfg, split.num_users, split.num_items)
    want = training.evaluate(mix, split.validation)

    seen = []
    result = training.fit(cfg, split, on_epoch=lambda r, s: seen.append((r, s.epoch)))
    assert [(r.epoch, e) for r, e in seen] == [(0, 0), (1, 1), (2, 2)]
    assert (seen[0][0].hr, seen[0][0].ndcg) == want
    assert math.isnan(seen[0][0].loss) and not seen[0][0].diverged and not result.diverged

    # epochs: 0 keeps the mix as it is; a model trained from scratch must train.
    kept = training.fit(cfg.replace(epochs=0), split)
    assert [r.epoch for r in kept.history] == [0]
    assert all(torch.equal(v, mix.state_dict()[k]) for k, v in kept.model.state_dict().items())
    TrainConfig.from_dict({**cfg.to_dict(), "epochs": 0})
    with pytest.raises(NcfError, match="epochs=0 must be at least 1"):
        TrainConfig.from_dict({"model": "neumf", "epochs": 0})


MF_SGD = TrainConfig(model="gmf", factors=8, dot_product=True, biases=True, init_std=0.1,
                     optimizer="sgd", momentum=0.0, lr=0.5, batch_size=64, epochs=3,
                     embedding_l2=0.01, num_negatives=2, seed=1)


@pytest.mark.parametrize("cfg", [MF_SGD, MF_SGD.replace(embedding_l2=0.0, biases=False,
                                                        lr_schedule="cosine")],
                         ids=["biases+l2", "cosine, no biases, no l2"])
def test_the_hand_written_mf_step_trains_as_autograd_does(ratings_file, monkeypatch, cfg):
    split = tiny_split(ratings_file)
    by_hand = training.fit(cfg, split)
    assert mf_sgd.applies(by_hand.model, cfg)
    monkeypatch.setattr(mf_sgd, "applies", lambda model, cfg: False)
    by_autograd = training.fit(cfg, split)
    a, b = by_hand.model.state_dict(), by_autograd.model.state_dict()
    assert by_hand.history[-1].loss < by_hand.history[0].loss  # it did train
    for k in a:  # the same maths; only float rounding differs
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    for x, y in zip(by_hand.history, by_autograd.history, strict=True):
        assert x.loss == pytest.approx(y.loss, rel=1e-5)


@pytest.mark.parametrize("change", [dict(dot_product=False), dict(momentum=0.9),
                                    dict(optimizer="adam"), dict(precision="bf16"),
                                    dict(l2=1e-4)])
def test_anything_but_plain_mf_with_plain_sgd_goes_through_autograd(change):
    cfg = MF_SGD.replace(**change)
    model = models.build("gmf", 5, 5, 8, (), 0.0, 0.1, True, cfg.dot_product)
    assert not mf_sgd.applies(model, cfg)
    assert not mf_sgd.applies(models.build("mlp", 5, 5, 8, (16, 8), 0.0, 0.1, True, False),
                              MF_SGD.replace(model="mlp", dot_product=False))


def test_eval_full_scores_each_epoch_by_full_ranking(ratings_file):
    split = tiny_split(ratings_file)
    sampled = training.fit(CFG.replace(epochs=1), split)
    full = training.fit(CFG.replace(epochs=1, eval="full"), split)
    want = training.evaluate_full(full.model, split, "validation")
    assert (full.history[0].hr, full.history[0].ndcg) == want
    assert want != (sampled.history[0].hr, sampled.history[0].ndcg)  # it is another metric
    with pytest.raises(NcfError, match="eval='all' is not one of sampled, full"):
        TrainConfig.from_dict({"eval": "all"})


def test_batch_lr_scales_from_the_batch_lr_was_chosen_at():
    sgd = TrainConfig(model="gmf", optimizer="sgd", lr=0.5, batch_size=1024, lr_batch=256)
    assert training.batch_lr(sgd) == pytest.approx(2.0)  # linear: 4x the rows, 4x the lr
    adam = sgd.replace(optimizer="adam", lr=1e-3)
    assert training.batch_lr(adam) == pytest.approx(2e-3)  # square root
    assert training.batch_lr(adam.replace(lr_batch=0)) == 1e-3  # lr is for batch_size
    assert training.batch_lr(adam.replace(lr_batch=1024)) == 1e-3
    assert training.learning_rate(sgd, 0.0) == pytest.approx(2.0)  # schedules peak there
    with pytest.raises(NcfError, match="lr_batch=-1"):
        TrainConfig.from_dict({"lr_batch": -1})


def test_one_plain_sgd_step_at_twice_the_batch_moves_rows_as_two_steps_do():
    # 2B rows with distinct users and items: with lr scaled linearly, one step of 2B
    # rows moves every row as far as two steps of B rows (only the shared output offset,
    # which the second step sees moved, differs a little)
    torch.manual_seed(0)
    b = 32
    users, items = torch.randperm(100)[:2 * b], torch.randperm(100)[:2 * b]
    labels = (torch.rand(2 * b) < 0.5).float()
    cfg = TrainConfig(model="gmf", factors=8, dot_product=True, optimizer="sgd", momentum=0.0,
                      lr=0.05, batch_size=b, lr_batch=b, init_std=0.1)
    base = models.build("gmf", 100, 100, 8, cfg.layers, 0.0, 0.1, False, True)

    def trained(config: TrainConfig, batches: list[slice]) -> torch.nn.Module:
        model = models.build("gmf", 100, 100, 8, cfg.layers, 0.0, 0.1, False, True)
        model.load_state_dict(base.state_dict())
        step = make_step(model, training.build_optimizer(model, config), config, False)
        for s in batches:
            step(users[s], items[s], labels[s])
        return model

    two = trained(cfg, [slice(0, b), slice(b, 2 * b)])
    one = trained(cfg.replace(batch_size=2 * b), [slice(0, 2 * b)])
    unscaled = trained(cfg.replace(batch_size=2 * b, lr_batch=0), [slice(0, 2 * b)])

    def moved(model: torch.nn.Module) -> torch.Tensor:
        return model.user.weight.detach() - base.user.weight.detach()

    scale = moved(two).abs().max()
    assert (moved(one) - moved(two)).abs().max() < 0.05 * scale
    assert (moved(unscaled) - moved(two)).abs().max() > 0.3 * scale  # half as far


def test_a_large_epoch_reports_in_parts_deterministically_and_resumes_mid_epoch(
        ratings_file, tmp_path, monkeypatch):
    # A small split made "large": reports every 200 positives instead of every 2^20.
    monkeypatch.setenv("NCF_TUNE_REPORT_POSITIVES", "200")
    split = tiny_split(ratings_file)
    cfg = CFG.replace(epochs=2, lr_schedule="cosine")
    parts = math.ceil(len(split.train_users) / 200)
    assert parts > 2
    seen = []

    def keep(res, state):
        seen.append(res)
        state.save(str(tmp_path / f"{res.epoch}-{res.part}.pt"), {"ndcg": res.ndcg})

    full = training.fit(cfg, split, on_epoch=keep)
    assert [(r.epoch, r.part) for r in seen] == [(e, p) for e in (1, 2)
                                                  for p in range(1, parts + 1)]
    assert seen[parts - 1].progress == 1.0 and 1 < seen[parts].progress < 2
    assert seen[-1].loss < seen[0].loss
    again = training.fit(cfg, split)
    a, b = full.model.state_dict(), again.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A checkpoint mid-way through epoch 2 goes on from the part after it.
    ck = checkpoint.load(tmp_path / "2-2.pt")
    assert ck.epoch == 1 and ck.metrics["part"] == 2
    resumed = training.fit(cfg, split, resume=ck)
    assert [(r.epoch, r.part) for r in resumed.history] == [(2, p) for p in
                                                            range(3, parts + 1)]
    b = resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("parts", [False, True], ids=["epoch whole", "epoch in parts"])
def test_a_run_past_its_cut_reports_what_it_has_and_stops(ratings_file, monkeypatch, parts):
    monkeypatch.setenv("NCF_TUNE_COMPILE", "off")  # short: not worth compiling
    if parts:
        monkeypatch.setenv("NCF_TUNE_REPORT_POSITIVES", "400")
    split = tiny_split(ratings_file)
    seen = []
    # A cut already due: the run trains its first CUT_CHECK_STEPS batches, then reports.
    cut = training.Cut(at=0.0, eval_rows=len(split.validation) * 100)
    result = training.fit(CFG.replace(batch_size=8), split, cut=cut,
                          on_epoch=lambda r, s: seen.append((r, s.epoch, s.part)))
    assert len(seen) == 1 == len(result.history)
    res, epoch, part = seen[0]
    lo, hi = sampling.plan(len(split.train_users), 4).chunk_bounds(0)  # the first chunk
    steps = math.ceil((hi - lo) * 5 / 8)
    assert res.cut == pytest.approx(training.CUT_CHECK_STEPS / steps)
    assert 0 < res.progress < 1 and res.completed == 0 and (epoch, part) == (0, 0)
    assert math.isfinite(res.loss) and 0 <= res.hr <= 1
