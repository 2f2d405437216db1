"""Implicit alternating least squares for the dot-product GMF (`optimizer: als`).

A GMF with h fixed to ones is matrix factorisation, and MF trained by implicit ALS
(Hu et al. 2008) is as strong as any model on the NCF paper's ML-1M protocol and far
cheaper than SGD (Rendle et al. 2022, "Revisiting the Performance of iALS on Item
Recommendation Benchmarks"). The loss, as Rendle et al. 2022 write it:

    L(P, Q) = sum over observed (u, i) of (1 - p_u . q_i)^2
              + alpha0 * sum over all (u, i) of (p_u . q_i)^2
              + lambda * sum_u (|I_u| + alpha0 |I|) ||p_u||^2
              + lambda * sum_i (|U_i| + alpha0 |U|) ||q_i||^2

alpha0 is `TrainConfig.unobserved_weight`, lambda is `TrainConfig.embedding_l2`. The
regularisation scaled by each row's frequency (their nu = 1) is what Rendle et al.
recommend: a row is pulled in as often as the loss sees it, as SGD's per-row L2 does.

With Q fixed, each user's p_u solves one d x d system (the Gramian trick: the sum over
all items is alpha0 * Q^T Q, computed once per sweep):

    (Q_u^T Q_u + alpha0 Q^T Q + lambda (|I_u| + alpha0 |I|) I) p_u = Q_u^T 1

and the items likewise with P fixed. An epoch is one sweep: every user, then every item.
The systems are solved exactly, in batches (torch.linalg.cholesky on a stack of d x d
matrices), users sorted by their number of items so that a batch's padded [B, L, d]
gather wastes little; no per-user Python loop. The same code runs on a CPU and a GPU.
(Conjugate gradient was tried: on a CPU its matrix-vector products are memory-bound, and
three steps per row took longer than forming and factorising each d x d system.)

The model stays an ordinary GMF (h = ones, output bias 0): its checkpoint pretrains a
NeuMF, serves `recommend` and retrains with `train --config` as any GMF's. User and
item biases, when the config has them, stay at zero: ALS does not fit them (the item
popularity they would learn is in the factors: the unobserved weight's pull is weaker
on popular items).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ncf_tune.models import GMF

# Bounds on one batch of systems: floats in the padded gather [B, L, d] and in the
# stack of matrices [B, d, d]. 2^22 floats is 16 MiB: fits a CPU's caches well enough
# and keeps a GPU busy; ML-1M at d = 192 takes 177 batches a sweep (users and items).
_GATHER_FLOATS = 1 << 22
_SYSTEM_FLOATS = 1 << 22


@dataclass(frozen=True)
class Side:
    """One side's rows (users or items) with their observed partners, as CSR sorted by
    count: batch k holds rows `order[starts[k]:starts[k + 1]]`, their partners padded to
    `widths[k]`."""

    order: torch.Tensor  # [n] row ids, by ascending count
    counts: torch.Tensor  # [n] observed partners per row (by row id)
    indptr: torch.Tensor  # [n + 1] CSR offsets (by row id)
    partners: torch.Tensor  # [nnz] partner ids, grouped by row
    batches: tuple[tuple[int, int, int], ...]  # (start, end, width) into `order`


def _side(rows: torch.Tensor, cols: torch.Tensor, n: int, dim: int) -> Side:
    counts = torch.bincount(rows, minlength=n)
    indptr = torch.zeros(n + 1, dtype=torch.long, device=rows.device)
    indptr[1:] = torch.cumsum(counts, 0)
    partners = cols[torch.argsort(rows, stable=True)]
    order = torch.argsort(counts, stable=True)
    sorted_counts = counts[order]
    # Rows in buckets of counts up to a power of two (at most 2x padding, usually far
    # less: the batch pads to its own largest count), each bucket cut into batches that
    # keep both bounds. A loop over buckets and batches, not rows.
    bucket = torch.ceil(torch.log2(sorted_counts.clamp(min=1).double())).long()
    bounds = torch.searchsorted(bucket, torch.unique(bucket), right=True).tolist()
    max_rows = max(1, _SYSTEM_FLOATS // (dim * dim))
    batches, start = [], 0
    for end_of_bucket in bounds:
        width = 1 << int(bucket[end_of_bucket - 1])
        step = max(1, min(max_rows, _GATHER_FLOATS // (width * dim)))
        for s in range(start, end_of_bucket, step):
            e = min(s + step, end_of_bucket)
            batches.append((s, e, int(sorted_counts[e - 1])))
        start = end_of_bucket
    return Side(order, counts, indptr, partners, tuple(batches))


class Sweeper:
    """One ALS sweep per call on a dot-product GMF's embeddings, in place.

    Built once per run: the observed pairs as CSR for users and for items, batches fixed.
    Calling it returns the sweep's loss (L above) per observed pair.
    """

    def __init__(self, model: GMF, train_users: torch.Tensor, train_items: torch.Tensor,
                 unobserved_weight: float, l2: float) -> None:
        self.model = model
        device = model.user.weight.device
        users, items = train_users.to(device), train_items.to(device)
        self.num_users, dim = model.user.weight.shape
        self.num_items = model.item.weight.shape[0]
        self.users = _side(users, items, self.num_users, dim)
        self.items = _side(items, users, self.num_items, dim)
        self.nnz = len(users)
        self.alpha0 = unobserved_weight
        self.l2 = l2

    @torch.no_grad()
    def __call__(self) -> float:
        p, q = self.model.user.weight, self.model.item.weight
        p.copy_(self._solve(self.users, q, self.num_items)[0])
        solved, misfit = self._solve(self.items, p, self.num_users)
        q.copy_(solved)
        return self._loss(misfit)

    def _solve(self, side: Side, fixed: torch.Tensor, n_other: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every row of `side` solved exactly against the `fixed` other side; and the sum
        over observed pairs of (1 - score)^2 at the solution, from the same gathers (the
        loss's first term, without a pass over the pairs of its own)."""
        dim = fixed.shape[1]
        gram = self.alpha0 * (fixed.T @ fixed)
        eye = torch.eye(dim, device=fixed.device, dtype=fixed.dtype)
        out = torch.empty(len(side.counts), dim, device=fixed.device, dtype=fixed.dtype)
        misfit = torch.zeros((), device=fixed.device, dtype=fixed.dtype)
        for start, end, width in side.batches:
            rows = side.order[start:end]
            counts = side.counts[rows]
            reg = self.l2 * (counts.to(fixed.dtype) + self.alpha0 * n_other)
            offsets = torch.arange(width, device=fixed.device)
            mask = offsets[None] < counts[:, None]  # [B, L]
            at = (side.indptr[rows][:, None] + offsets[None]).clamp(max=len(side.partners) - 1)
            gathered = fixed[side.partners[at]] * mask[..., None]  # [B, L, d], pads 0
            b = gathered.sum(1)  # Q_u^T 1
            a = torch.baddbmm(gram + reg[:, None, None] * eye, gathered.transpose(1, 2),
                              gathered)
            chol = torch.linalg.cholesky(a)
            x = torch.cholesky_solve(b[..., None], chol)  # [B, d, 1]
            out[rows] = x[..., 0]
            misfit += ((1 - torch.bmm(gathered, x)[..., 0]).square() * mask).sum()
        return out, misfit

    def _loss(self, misfit: torch.Tensor) -> float:
        """L(P, Q) per observed pair, given its first term: the quantity each sweep
        lowers."""
        p, q = self.model.user.weight, self.model.item.weight
        all_pairs = ((p.T @ p) * (q.T @ q)).sum()  # sum over every (u, i) of (p_u . q_i)^2
        user_reg = (self.users.counts + self.alpha0 * self.num_items) * p.square().sum(-1)
        item_reg = (self.items.counts + self.alpha0 * self.num_users) * q.square().sum(-1)
        total = (misfit + self.alpha0 * all_pairs
                 + self.l2 * (user_reg.sum() + item_reg.sum()))
        return (total / self.nnz).item()
