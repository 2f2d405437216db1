"""The report's figures and hyperparameter importance, on synthetic trials."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ncf_tune import figures, results
from ncf_tune.results import StageFigures, StageSummary, TrialRow

PNG = b"\x89PNG\r\n\x1a\n"


def trials(n: int = 24, seed: int = 0) -> tuple[list[TrialRow], dict[str, pd.DataFrame]]:
    """Trials whose score is set by lr alone (best near 3e-3); batch_size and layers are
    noise. Every third trial is stopped early after 2 epochs, by 'ASHA' or the budget."""
    rng = np.random.default_rng(seed)
    rows, curves = [], {}
    for t in range(n):
        lr = float(10 ** rng.uniform(-4, -1.5))
        config = {"lr": lr, "batch_size": int(rng.choice([256, 1024, 4096])),
                  "layers": [[16, 8], [32, 16, 8]][int(rng.integers(2))]}
        best = 0.5 - 0.1 * (np.log10(lr) + 2.5) ** 2
        epochs = 2 if t % 3 == 0 else 6
        curve = best * (1 - 0.5 ** np.arange(1, epochs + 1))
        status = ("completed" if epochs == 6 else "stopped early (ASHA)" if t % 2
                  else "cut by the time budget")
        rows.append(TrialRow(f"t{t:02d}", status, epochs, int(curve.argmax()) + 1,
                             float(curve.max()) * 1.8, float(curve.max()), 1.0, config))
        curves[f"t{t:02d}"] = pd.DataFrame({"epoch": np.arange(1, epochs + 1), "ndcg": curve,
                                            "hr": curve * 1.8})
    return rows, curves


def test_importance_finds_the_one_param_that_sets_the_score():
    rows, _ = trials()
    values, note = figures.importance(
        rows, {"lr": "loguniform", "batch_size": "choice", "layers": "choice"}, "ndcg")
    assert set(values) == {"lr", "batch_size", "layers"}
    assert max(values, key=values.get) == "lr" and values["lr"] > 0.5
    assert abs(sum(values.values()) - 1) < 1e-6 and note == ""
    # The same without scales: numbers are taken as linear, lists as choices.
    assert max(figures.importance(rows, ["lr", "batch_size", "layers"], "hr")[0].items(),
               key=lambda kv: kv[1])[0] == "lr"


def test_importance_with_too_little_to_go_on_is_empty_and_says_why():
    rows, _ = trials(3)
    values, note = figures.importance(rows[:1], ["lr"], "ndcg")
    assert values == {} and "1 trial(s) finished an epoch, it needs two or more" in note
    for r in rows:
        r.config["lr"] = 0.001
    values, note = figures.importance(rows, ["lr"], "ndcg")
    assert values == {} and "nothing varied (lr: one value in every trial)" in note
    for r in rows:  # failed trials: no score
        r.val_ndcg = None
    assert figures.importance(rows, ["batch_size"], "ndcg")[0] == {}
    assert figures.importance(rows, [], "ndcg") == ({}, "")


def test_stage_figures_are_pngs_and_the_report_links_them(tmp_path):
    rows, curves = trials()
    params = {"lr": "loguniform", "batch_size": "choice", "layers": "choice"}
    fig = figures.for_stage(tmp_path, "gmf", "ndcg", curves, rows, params)
    assert [p.name for p in fig.images] == ["gmf_curves.png", "gmf_params.png"]
    for p in fig.images:
        assert p.parent == tmp_path and p.stat().st_size > 5000
        assert p.read_bytes()[:8] == PNG
    summary = StageSummary(
        stage="gmf", model="gmf", key="k", data="ml-1m", data_fingerprint="f", metric="ndcg",
        winner_trial="t01", best_epoch=6, val_hr=0.8, val_ndcg=0.5, test_hr=0.7,
        test_ndcg=0.4, trials=len(rows), statuses={"completed": 16}, wall_seconds=1.0,
        trial_seconds=1.0, best_config={"model": "gmf"})
    report = results.write_report(tmp_path, [summary, summary.__class__(
        **{**summary.__dict__, "stage": "mlp", "model": "mlp"})], figures={"gmf": fig})
    text = report.read_text()
    assert "![gmf: gmf curves](gmf_curves.png)" in text
    assert "![gmf: gmf params](gmf_params.png)" in text
    assert "| hyperparameter | importance |" in text and f"| lr | {fig.importance['lr']:.3f} |" \
        in text
    assert text.count("![") == 2  # the mlp stage had no figures: its section has none
    # Without figures, the report is what it was.
    plain = results.write_report(tmp_path, [summary]).read_text()
    assert "![" not in plain and "importance" not in plain


def test_for_stage_never_raises(tmp_path):
    rows, curves = trials(4)
    curves["t00"] = pd.DataFrame({"epoch": [1], "loss": [0.3]})  # no metric column: skipped
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the folder should be
    fig = figures.for_stage(blocked, "gmf", "ndcg", curves, rows, ["lr"])
    assert isinstance(fig, StageFigures) and fig.images == []
    assert fig.note.startswith("figures not drawn (FileExistsError")
