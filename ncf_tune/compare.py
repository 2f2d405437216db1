"""What a gain is worth: a popularity baseline and paired comparisons on per-user hits.

Test HR@10 is a mean over users of 0/1 hits: with 6,040 test users and HR near 0.73 its
standard error is about 0.0057, so two models 0.005 apart may be one model twice. Two
models scored on the same users are compared pairwise, which is far sharper than
comparing two means: most users are hit (or missed) by both, and only the users on
which they disagree carry the difference.

    popularity(split, "test")       every candidate scored by its training count
    Hits.of(model, eval_set)         a model's per-user hits and NDCG gains
    paired(a, b)                     a - b with a 95 % interval, and McNemar's exact p
    report_lines(...)                report.md's section on a search's winners
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ncf_tune import checkpoint
from ncf_tune.data import EvalSet, Split
from ncf_tune.errors import NcfError
from ncf_tune.metrics import positive_rank
from ncf_tune.results import StageSummary, best_stage
from ncf_tune.training import ranks

TOP_K = 10
Z95 = 1.959964  # two-sided 95 % normal quantile


@dataclass(frozen=True)
class Hits:
    """Per user of an evaluation set: the held-out item's 0-based rank among its
    candidates; HR@k and NDCG@k per user come from it."""

    rank: torch.Tensor  # [users] int64

    @classmethod
    def of(cls, model: nn.Module, eval_set: EvalSet) -> Hits:
        return cls(ranks(model, eval_set).cpu())

    def hit(self, k: int = TOP_K) -> torch.Tensor:
        """[users] float64: 1 where the held-out item is in the top k."""
        return (self.rank < k).double()

    def gain(self, k: int = TOP_K) -> torch.Tensor:
        """[users] float64: NDCG@k per user, 1 / log2(rank + 2) in the top k, else 0."""
        return torch.where(self.rank < k, 1.0 / torch.log2(self.rank.double() + 2.0), 0.0)

    def means(self, k: int = TOP_K) -> tuple[float, float]:
        """(HR@k, NDCG@k): as training.evaluate gives them."""
        if self.rank.numel() == 0:
            return 0.0, 0.0
        return self.hit(k).mean().item(), self.gain(k).mean().item()


def popularity(split: Split, which: str = "test") -> Hits:
    """TopPopular (Dacrema et al. 2019's baseline): every candidate scored by how many
    training interactions it has, the same for every user; no training, milliseconds.
    Ties count against the held-out item, as for any model (metrics.py)."""
    counts = torch.bincount(split.train_items, minlength=split.num_items).double()
    eval_set: EvalSet = getattr(split, which)
    scores = counts[eval_set.candidates.clamp(min=0)]
    scores = scores.masked_fill(eval_set.candidates < 0, float("-inf"))
    return Hits(positive_rank(scores))


@dataclass(frozen=True)
class Paired:
    """Model a minus model b on the same users."""

    users: int
    hr_diff: float  # HR@10(a) - HR@10(b)
    hr_low: float  # its 95 % interval (normal, on the paired per-user differences)
    hr_high: float
    ndcg_diff: float
    ndcg_low: float
    ndcg_high: float
    a_only: int  # users a hits and b misses
    b_only: int  # users b hits and a misses
    p_value: float  # McNemar's exact test on a_only vs b_only (two-sided); 1: no evidence

    @property
    def significant(self) -> bool:
        """Whether the HR difference is beyond noise at the 5 % level."""
        return self.p_value < 0.05

    def line(self) -> str:
        """One sentence for a report."""
        verdict = ("beyond noise (p < 0.05)" if self.significant
                   else "within noise (p >= 0.05)")
        return (f"HR@10 {self.hr_diff:+.4f} (95 % CI {self.hr_low:+.4f} .. {self.hr_high:+.4f}; "
                f"{self.a_only} users hit only by the first, {self.b_only} only by the second; "
                f"McNemar p = {self.p_value:.3g}: {verdict}), NDCG@10 {self.ndcg_diff:+.4f} "
                f"(95 % CI {self.ndcg_low:+.4f} .. {self.ndcg_high:+.4f})")


def paired(a: Hits, b: Hits, k: int = TOP_K) -> Paired:
    """a - b on the same users (in the same order): mean differences of HR@k and NDCG@k
    per user with 95 % normal intervals, and McNemar's exact two-sided p-value for HR."""
    if a.rank.shape != b.rank.shape:
        raise ValueError(f"paired comparison needs the same users: {a.rank.shape[0]} and "
                         f"{b.rank.shape[0]}")
    n = a.rank.numel()
    hr = _mean_ci(a.hit(k) - b.hit(k))
    ndcg = _mean_ci(a.gain(k) - b.gain(k))
    a_only = int(((a.rank < k) & (b.rank >= k)).sum())
    b_only = int(((b.rank < k) & (a.rank >= k)).sum())
    return Paired(n, *hr, *ndcg, a_only, b_only, mcnemar(a_only, b_only))


def _mean_ci(d: torch.Tensor) -> tuple[float, float, float]:
    n = d.numel()
    if n == 0:
        return 0.0, 0.0, 0.0
    mean = d.mean().item()
    half = Z95 * (d.std().item() / math.sqrt(n)) if n > 1 else 0.0
    return mean, mean - half, mean + half


def mcnemar(a_only: int, b_only: int) -> float:
    """Exact two-sided McNemar p-value: under "no difference", each discordant user is
    a fair coin, so min(a_only, b_only) is Binomial(a_only + b_only, 1/2)'s lower tail,
    doubled (capped at 1). 1.0 when nobody disagrees."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    k = torch.arange(min(a_only, b_only) + 1, dtype=torch.float64)
    log_pmf = (math.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)
               - n * math.log(2.0))
    return min(1.0, 2.0 * torch.logsumexp(log_pmf, 0).exp().item())


def report_lines(experiment_dir: Path, summaries: list[StageSummary], split: Split
                 ) -> list[str]:
    """report.md's "what the gain is worth" section: a popularity ranker's test scores
    on the same split and the chain's best model's lift over it, and (for a chain of
    several stages) the best model against the best other stage's winner (its best
    single part, for a NeuMF), both as paired comparisons on the same test users. Costs
    one test pass per model compared (seconds)."""
    best = best_stage(summaries)
    try:
        hits = {best.stage: _stage_hits(experiment_dir, best, split)}
    except NcfError as exc:  # the search's results stand without this section
        return ["## What the gain is worth", "", f"*Not compared: {exc}*", ""]
    pop = popularity(split, "test")
    pop_hr, pop_ndcg = pop.means()
    n = pop.rank.numel()
    hr = best.test_hr
    se = math.sqrt(hr * (1 - hr) / n) if n else 0.0
    lines = ["## What the gain is worth", "",
             f"Test set: {n} users; a HR@10 near {hr:.2f} has a standard error of about "
             f"{se:.4f} on its own. Two models scored on the same users are compared pair "
             "by pair, which is sharper: only the users on which they disagree count.", "",
             f"- Popularity (every candidate scored by its training count, no training): "
             f"test HR@10 {pop_hr:.4f}, NDCG@10 {pop_ndcg:.4f}.",
             f"- {best.stage} over popularity: {paired(hits[best.stage], pop).line()}."]
    others = [s for s in summaries if s is not best]
    if others:
        part = max(others, key=lambda s: getattr(s, f"val_{best.metric}"))
        try:
            versus = paired(hits[best.stage], _stage_hits(experiment_dir, part, split)).line()
        except NcfError as exc:
            versus = f"not compared ({exc})"
        lines.append(f"- {best.stage} over {part.stage}, the best other stage (by validation "
                     f"{best.metric.upper()}@10): {versus}.")
    return [*lines, ""]


def _stage_hits(experiment_dir: Path, summary: StageSummary, split: Split) -> Hits:
    model = checkpoint.load(experiment_dir / summary.stage / "best_model.pt").model()
    return Hits.of(model, split.test)
