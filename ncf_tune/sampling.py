"""Exact negative sampling for one training epoch, vectorised on the training device.

For every training positive (u, i) an epoch adds `num_negatives` rows (u, j, 0) where j
is drawn uniformly from the items u never interacted with in training. "Exact" means a
negative is never one of u's training items (some fast samplers skip that check).

How: draw all negatives at once, test membership against the sorted keys
user * num_items + item with one binary search (`torch.searchsorted`), and redraw only
the rejected ones. With p = the share of a user's items among all items, the expected
number of rounds is small (ML-1M: most rows are accepted in the first round).

Where every (user, item) pair fits in a small table (ML-1M: 22M pairs, 22 MB), the test
is one read of that table instead of a binary search of ~20 reads: 0.03 s instead of
0.6 s for an epoch's 8M draws on a CPU core. Both answer alike, so the epochs are the
same.

Large data, in chunks (`EpochPlan`): an epoch of more than REPORT_POSITIVES positives
(ML-20M: 9.3M; ML-1M's 0.99M stay whole) is drawn and trained chunk by chunk, so a
trial's memory is bounded by a chunk (CHUNK_ROWS rows), not by the epoch. The rule,
fixed by (seed, epoch): the epoch's positives are permuted once (a generator seeded with
(seed, epoch)); chunk c takes the next slice of that permutation, draws its negatives
with a generator seeded with (seed, epoch, c), and is shuffled on its own. So every
positive is seen once an epoch with its own fresh negatives, the order is random over
the whole epoch at the positives' level, and a chunk can be redrawn alone (resuming
mid-epoch draws the same rows). Chunk rows keep their ids as int32 (4 bytes, not 8);
a batch is widened to int64 as it is trained.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from ncf_tune.errors import NcfError

DENSE_PAIRS = 1 << 26  # the largest membership table: 64 MB of bool
# Positives per report: an epoch larger than this is trained, validated and reported in
# parts of at most this many positives (each with its negatives), so the unit a trial
# reports in, and that ASHA's rungs count, does not grow with the data. 2^20 keeps
# ML-1M (988,129 training positives) at one report an epoch. Environment variable
# NCF_TUNE_REPORT_POSITIVES sets another (smaller: tests on small data; it reaches Ray's
# workers on this machine through their environment).
REPORT_POSITIVES = 1 << 20
# Rows (positives and negatives) drawn at once when an epoch is in parts: at 12 bytes a
# row as int32 ids and a float label, 50 MB, and as much again shuffled.
CHUNK_ROWS = 1 << 22


@dataclass(frozen=True)
class EpochData:
    """One epoch's training rows; all tensors on the training device."""

    users: torch.Tensor  # [n * (1 + k)] int64 (int32 in a chunk: `NegativeSampler.chunk`)
    items: torch.Tensor  # [n * (1 + k)] int64 (idem)
    labels: torch.Tensor  # [n * (1 + k)] float32: 1 positive, 0 negative

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class EpochPlan:
    """How one epoch of `positives` training positives is cut: into `parts` reports,
    each of `chunks // parts` chunks (drawn and trained one at a time). One part and one
    chunk: the epoch is drawn whole, as `NegativeSampler.epoch` does."""

    positives: int
    parts: int
    chunks: int  # a multiple of parts

    @property
    def whole(self) -> bool:
        return self.parts == 1 and self.chunks == 1

    def chunk_bounds(self, chunk: int) -> tuple[int, int]:
        """[lo, hi) of the epoch's permuted positives that chunk `chunk` trains on."""
        return (self.positives * chunk // self.chunks,
                self.positives * (chunk + 1) // self.chunks)

    def part_of(self, chunk: int) -> int:
        """0-based part (report) that chunk `chunk` belongs to."""
        return chunk * self.parts // self.chunks

    def chunks_of(self, part: int) -> range:
        per = self.chunks // self.parts
        return range(part * per, (part + 1) * per)


def report_positives() -> int:
    """REPORT_POSITIVES, or NCF_TUNE_REPORT_POSITIVES when set."""
    value = os.environ.get("NCF_TUNE_REPORT_POSITIVES", "").strip()
    if not value:
        return REPORT_POSITIVES
    if not value.isdigit() or int(value) < 1:
        raise NcfError(f"environment variable NCF_TUNE_REPORT_POSITIVES={value!r} is not a "
                       "positive whole number; unset it for the default "
                       f"({REPORT_POSITIVES})")
    return int(value)


def reports_per_epoch(positives: int, per_report: int | None = None) -> int:
    """How many times a trial reports in an epoch of `positives` training positives:
    1 up to `per_report` (default `report_positives()`), then one report per at most
    that many."""
    return max(1, math.ceil(positives / (per_report or report_positives())))


def plan(positives: int, num_negatives: int, per_report: int | None = None,
         chunk_rows: int = CHUNK_ROWS) -> EpochPlan:
    """The cut of an epoch of `positives` positives with `num_negatives` each: whole when
    it is one report (ML-1M), else parts of equal size, each in chunks of at most
    `chunk_rows` rows."""
    parts = reports_per_epoch(positives, per_report)
    if parts == 1:
        return EpochPlan(positives, 1, 1)
    part_rows = math.ceil(positives / parts) * (1 + num_negatives)
    return EpochPlan(positives, parts, parts * max(1, math.ceil(part_rows / chunk_rows)))


def chunk_seed(seed: int, epoch: int, chunk: int | None = None) -> int:
    """The generator seed of epoch `epoch` (0-based) of a run seeded `seed`, and of its
    chunk `chunk` when an epoch is in chunks. The epoch's is the one `training.fit` has
    always used, so an epoch drawn whole is drawn as before."""
    base = seed * 1_000_003 + epoch
    return base if chunk is None else (base * 1_000_003 + chunk) % (1 << 63)


class NegativeSampler:
    """Holds the training positives on the device and draws an epoch from them."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor, num_items: int,
                 device: torch.device | str = "cpu", dense_pairs: int = DENSE_PAIRS) -> None:
        """`dense_pairs`: the most users x items pairs to test membership in a table."""
        self.users = users.to(device)
        self.items = items.to(device)
        self.num_items = num_items
        self.keys = torch.unique(self.users * num_items + self.items)  # sorted
        top_user = int(self.users.max()) if len(self.users) else 0
        pairs = (top_user + 1) * num_items if len(self.users) else 0
        self.narrow = max(top_user, num_items) < 2**31  # ids fit int32 (chunks keep them so)
        self.table: torch.Tensor | None = None  # table[user * num_items + item]: positive?
        if pairs <= dense_pairs:
            self.table = torch.zeros(pairs, dtype=torch.bool, device=self.keys.device)
            self.table[self.keys] = True

    def negatives(self, users: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One negative item per entry of `users`, never one of that user's positives."""
        items = torch.randint(0, self.num_items, users.shape, device=users.device,
                              generator=generator)
        todo = self._is_positive(users, items).nonzero().squeeze(1)
        while todo.numel():
            redraw = torch.randint(0, self.num_items, todo.shape, device=users.device,
                                   generator=generator)
            items[todo] = redraw
            todo = todo[self._is_positive(users[todo], redraw)]
        return items

    def epoch(self, num_negatives: int, generator: torch.Generator) -> EpochData:
        """The positives followed by `num_negatives` fresh negatives for each of them."""
        neg_users = self.users.repeat(num_negatives)
        neg_items = self.negatives(neg_users, generator)
        n = len(self.users)
        labels = torch.zeros(n * (1 + num_negatives), device=self.users.device)
        labels[:n] = 1.0
        return EpochData(
            users=torch.cat([self.users, neg_users]),
            items=torch.cat([self.items, neg_items]),
            labels=labels,
        )

    def permutation(self, generator: torch.Generator) -> torch.Tensor:
        """A random order of the positives: an epoch in chunks takes them in this order."""
        return torch.randperm(len(self.users), device=self.users.device, generator=generator)

    def chunk(self, positions: torch.Tensor, num_negatives: int,
              generator: torch.Generator) -> EpochData:
        """The positives at `positions` followed by `num_negatives` fresh negatives for
        each of them; ids as int32 when every id fits (see the module docstring)."""
        users = self.users.index_select(0, positions)
        items = self.items.index_select(0, positions)
        neg_users = users.repeat(num_negatives)
        neg_items = self.negatives(neg_users, generator)
        n = len(users)
        labels = torch.zeros(n * (1 + num_negatives), device=users.device)
        labels[:n] = 1.0
        dtype = torch.int32 if self.narrow else torch.int64
        return EpochData(
            users=torch.cat([users.to(dtype), neg_users.to(dtype)]),
            items=torch.cat([items.to(dtype), neg_items.to(dtype)]),
            labels=labels,
        )

    def _is_positive(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        query = users * self.num_items + items
        if self.table is not None:
            return self.table.index_select(0, query)
        idx = torch.searchsorted(self.keys, query).clamp_(max=len(self.keys) - 1)
        return self.keys[idx] == query
