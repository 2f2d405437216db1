from __future__ import annotations

import torch

from ncf_tune import checkpoint, data, training
from ncf_tune.config import TrainConfig


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


def test_resume_from_epoch_k_ends_with_the_same_weights(ratings_file, tmp_path):
    split = tiny_split(ratings_file)

    def keep(res, state):
        state.save(str(tmp_path / f"epoch{res.epoch}.pt"), {"ndcg": res.ndcg})

    full = training.fit(CFG, split, on_epoch=keep)
    ck = checkpoint.load(tmp_path / "epoch1.pt")
    assert ck.epoch == 1 and ck.optimizer_state is not None and ck.config == CFG
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
    assert ck.metrics == {"ndcg": 0.5} and (ck.num_users, ck.num_items) == (
        split.num_users, split.num_items)
    model = ck.model()
    assert training.evaluate(model, split.test) == training.evaluate(result.model, split.test)


def test_a_diverging_run_stops_and_says_so(ratings_file):
    split = tiny_split(ratings_file)
    result = training.fit(CFG.replace(lr=1e30, optimizer="sgd", epochs=5), split)
    assert result.diverged and len(result.history) < 5
    assert result.best() is None or not result.best().diverged
