"""Every item scored for many users: top-k recommendations and full-ranking evaluation.

A model's `item_scorer()` gives [users x items] blocks of logits. Users go in chunks so
that a block, and a tower's [users x items x width] activations, stay within
`max_elements` floats: on a CPU blocks that stay in its caches are fastest (every ML-1M
user on one core, NeuMF-64 with a (256, 128, 64) tower: 11.7 s at 2^20 floats a block,
16.4 s at 2^23); a GPU wants big ones.
Items a user must not be offered (what the user has seen; in an evaluation, the user's
other known positives) are masked with -inf through an `ItemSets` built once per list
of users, so a chunk's mask is a slice, never a loop over users.

Full ranking (Krichene and Rendle, KDD 2020): the held-out item is ranked against every
item the user never interacted with, instead of against 99 sampled ones. For the
validation item that excludes the user's training items and test item; for the test
item, the training items and the validation item (a known positive of the user, which
counting as a negative would punish a model for ranking it high). The sampled protocol's
negatives avoid the same items.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ncf_tune import metrics
from ncf_tune.data import Split
from ncf_tune.eval_sample import user_sample
from ncf_tune.models import pair_width


def max_elements_for(device: torch.device) -> int:
    """Floats per chunk: 4 MB blocks on a CPU, 64 MB on a GPU."""
    return 1 << 24 if device.type == "cuda" else 1 << 20


class ItemSets:
    """For each of `users` (distinct), the items among (pair_users, pair_items) that are
    the user's: all pairs sorted by the user's row, so rows a..b are one slice."""

    def __init__(self, users: torch.Tensor, pair_users: torch.Tensor, pair_items: torch.Tensor,
                 num_users: int) -> None:
        row_of = torch.full((num_users,), -1, dtype=torch.long, device=users.device)
        row_of[users] = torch.arange(len(users), device=users.device)
        rows = row_of[pair_users.to(users.device)]
        keep = rows >= 0
        rows, items = rows[keep], pair_items.to(users.device)[keep]
        order = torch.argsort(rows, stable=True)
        self.rows, self.items = rows[order], items[order]
        # bounds[r]: where row r's pairs start (bounds[len(users)]: the end)
        self.bounds = torch.searchsorted(
            self.rows, torch.arange(len(users) + 1, device=users.device)).tolist()

    def mask(self, scores: torch.Tensor, start: int) -> torch.Tensor:
        """Set -inf, in place, where `scores` (rows start.. of the user list) holds one of
        the row's items; returns `scores`."""
        lo, hi = self.bounds[start], self.bounds[start + len(scores)]
        scores[self.rows[lo:hi] - start, self.items[lo:hi]] = float("-inf")
        return scores


def chunks(model: nn.Module, users: torch.Tensor, num_items: int,
           max_elements: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """(start, every item's logit for users[start:start + n]) for consecutive chunks of
    `users`, in eval mode, without gradients. The model is left in the mode it was in."""
    max_elements = max_elements or max_elements_for(users.device)
    step = max(1, max_elements // (num_items * pair_width(model)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            scores = model.item_scorer()  # the items' side, once for all chunks
            for start in range(0, len(users), step):
                yield start, scores(users[start:start + step]).float()
    finally:
        model.train(was_training)


def top_k(model: nn.Module, users: torch.Tensor, num_items: int, k: int,
          exclude: ItemSets | None = None, max_elements: int | None = None
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best items for each of `users`, best first, not among `exclude`'s:
    (items [n, k] int64, logits [n, k]). Where a user has fewer than k items left, the
    row ends in logit -inf (item ids there mean nothing)."""
    k = min(k, num_items)
    items, scores = [], []
    for start, block in chunks(model, users, num_items, max_elements):
        if exclude is not None:
            exclude.mask(block, start)
        top = torch.topk(block, k, dim=1)
        items.append(top.indices)
        scores.append(top.values)
    if not items:
        empty = torch.empty(0, k, device=users.device)
        return empty.long(), empty
    return torch.cat(items), torch.cat(scores)


class FullRanking:
    """Full-ranking HR@k / NDCG@k of a split's validation or test users (see the module
    docstring for which items each is ranked against). Built once, on `device`; call it
    with a model for each evaluation. max_users: on more users than that, a seeded
    sample of that many (eval_sample.py); None: every user."""

    def __init__(self, split: Split, which: str = "validation",
                 device: torch.device | str = "cpu", max_users: int | None = None) -> None:
        if which not in ("validation", "test"):
            raise ValueError(f"which={which!r}: 'validation' or 'test'")
        held, other = ((split.validation, split.test) if which == "validation"
                       else (split.test, split.validation))
        if max_users is not None:
            held = user_sample(held, max_users, split.seed)
        self.num_items = split.num_items
        self.users = held.users.to(device)
        self.positives = held.candidates[:, 0].to(device)
        # The user's other positives: training items and the other held-out item.
        self.exclude = ItemSets(
            self.users,
            torch.cat([split.train_users, other.users]),
            torch.cat([split.train_items, other.candidates[:, 0]]),
            split.num_users,
        )

    def ranks(self, model: nn.Module, max_elements: int | None = None) -> torch.Tensor:
        """Each user's held-out item's 0-based rank among the items it is ranked against:
        [users] int64. Ties and NaN count against the held-out item, as in metrics.py."""
        ranks = []
        for start, block in chunks(model, self.users, self.num_items, max_elements):
            pos = self.positives[start:start + len(block), None]
            pos_score = block.gather(1, pos)
            self.exclude.mask(block, start)
            block.scatter_(1, pos, float("-inf"))  # not its own negative
            ranks.append((~(block < pos_score)).sum(dim=1))
        return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)

    def __call__(self, model: nn.Module, k: int = 10) -> tuple[float, float]:
        """(HR@k, NDCG@k) of `model`, full ranking."""
        return metrics.from_ranks(self.ranks(model), k)
