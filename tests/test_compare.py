"""compare.py: the popularity baseline and paired comparisons on per-user hits."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import binomtest

from ncf_tune import checkpoint, compare, data, results, training
from ncf_tune.compare import Hits, mcnemar, paired, popularity
from ncf_tune.config import TrainConfig
from ncf_tune.results import StageSummary


def test_identical_hits_differ_by_nothing_with_p_one():
    a = Hits(torch.tensor([0, 3, 12, 40, 9, 2]))
    p = paired(a, a)
    assert (p.hr_diff, p.hr_low, p.hr_high, p.ndcg_diff) == (0.0, 0.0, 0.0, 0.0)
    assert p.a_only == p.b_only == 0 and p.p_value == 1.0 and not p.significant


def test_a_constructed_difference_has_the_right_sign_interval_and_p():
    # 1000 users: both hit 600, a alone hits 60 more, b alone 20 more
    a = torch.full((1000,), 50)
    b = torch.full((1000,), 50)
    a[:600] = b[:600] = 0
    a[600:660] = 0
    b[660:680] = 0
    p = paired(Hits(a), Hits(b))
    assert p.hr_diff == pytest.approx(0.04) and 0 < p.hr_low < 0.04 < p.hr_high
    assert (p.a_only, p.b_only) == (60, 20)
    assert p.p_value == pytest.approx(binomtest(20, 80, 0.5).pvalue, rel=1e-9)
    assert p.significant and "beyond noise" in p.line()
    flipped = paired(Hits(b), Hits(a))
    assert flipped.hr_diff == pytest.approx(-0.04) and flipped.p_value == p.p_value
    assert flipped.ndcg_high < 0


@pytest.mark.parametrize("a_only,b_only", [(0, 1), (3, 5), (10, 10), (7, 30), (250, 310)])
def test_mcnemar_is_the_exact_binomial_test(a_only, b_only):
    assert mcnemar(a_only, b_only) == pytest.approx(
        binomtest(min(a_only, b_only), a_only + b_only, 0.5).pvalue, rel=1e-9)


def test_popularity_ranks_by_training_count_and_per_user_hits_match_evaluate(ratings_file):
    split = data.prepare(ratings_file, seed=0)
    pop = popularity(split, "validation")
    counts = torch.bincount(split.train_items, minlength=split.num_items)
    cand = split.validation.candidates
    c = counts[cand.clamp(min=0)].masked_fill(cand < 0, -1)
    assert torch.equal(pop.rank, (c[:, 1:] >= c[:, :1]).sum(1))
    assert 0 < pop.means()[0] < 1
    model = training.fit(TrainConfig(model="gmf", factors=4, epochs=1, batch_size=64),
                         split).model
    assert Hits.of(model, split.test).means() == training.evaluate(model, split.test)
    assert compare.TOP_K == training.TOP_K


def test_the_report_section_compares_the_best_model_with_popularity_and_a_part(ratings_file,
                                                                                tmp_path):
    split = data.prepare(ratings_file, seed=0)
    summaries = []
    for stage, (factors, val) in {"gmf": (4, 0.3), "big": (8, 0.5)}.items():
        cfg = TrainConfig(model="gmf", factors=factors, epochs=2, batch_size=64)
        model = training.fit(cfg, split).model
        (tmp_path / stage).mkdir()
        checkpoint.save(tmp_path / stage / "best_model.pt", model, None, cfg, 2,
                        split.num_users, split.num_items)
        hr, ndcg = training.evaluate(model, split.test)
        summaries.append(StageSummary(
            stage=stage, model="gmf", key="k", data="d", data_fingerprint="f",
            metric="ndcg", winner_trial="t", best_epoch=2, val_hr=val, val_ndcg=val,
            test_hr=hr, test_ndcg=ndcg, trials=1, statuses={}, wall_seconds=1.0,
            trial_seconds=1.0, best_config={}))
    lines = compare.report_lines(tmp_path, summaries, split)
    text = "\n".join(lines)
    pop_hr, _ = popularity(split, "test").means()
    assert f"test HR@10 {pop_hr:.4f}" in text
    assert "- big over popularity: HR@10 " in text and "- big over gmf, the best other" in text
    report = results.write_report(tmp_path, summaries, worth=lines).read_text()
    assert report.index("## What the gain is worth") < report.index("## gmf (GMF)")
    assert "over gmf" not in "\n".join(compare.report_lines(tmp_path, summaries[1:], split))
    # a damaged checkpoint leaves the report without that comparison, not without a report
    (tmp_path / "gmf" / "best_model.pt").write_text("damaged")
    text = "\n".join(compare.report_lines(tmp_path, summaries, split))
    assert "- big over gmf, the best other stage (by validation NDCG@10): not compared" in text
    (tmp_path / "big" / "best_model.pt").unlink()
    assert "Not compared: " in "\n".join(compare.report_lines(tmp_path, summaries, split))
