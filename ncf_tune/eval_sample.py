"""Evaluation on many users: a fixed, seeded sample of them where scoring all would cost
more than it tells.

Validation is scored after every report of every trial; on ML-20M's 138,493 users and
their 99 negatives that is 13.9M pairs through the model each time, minutes for an MLP
tower on a CPU core. A sample of VALIDATION_USERS users, drawn once from the split's
seed (every trial of a search is scored on the same users), measures HR@10 to within a
standard error of at most sqrt(0.25 / 10,000) = 0.005 (0.0025 at HR 0.9 or 0.1), well
under the differences a search acts on. Full ranking (every item per user) is bounded
the same way. The test set's sampled ranking (99 negatives) is scored on every user: it
is scored once per stage, for its winner.

ML-1M (6,040 users) is under both bounds: nothing is sampled there.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ncf_tune.data import EvalSet

VALIDATION_USERS = 10_000  # users scored per validation, when there are more
FULL_RANKING_USERS = 10_000  # users ranked against every item, when there are more


def user_sample(eval_set: EvalSet, max_users: int, seed: int) -> EvalSet:
    """`eval_set` itself when it has at most `max_users` users, else `max_users` of its
    rows drawn without replacement by `seed` (in their original order)."""
    if len(eval_set) <= max_users:
        return eval_set
    rng = np.random.default_rng([seed, len(eval_set), max_users])
    rows = torch.from_numpy(np.sort(rng.choice(len(eval_set), max_users, replace=False)))
    return EvalSet(eval_set.users.index_select(0, rows.to(eval_set.users.device)),
                   eval_set.candidates.index_select(0, rows.to(eval_set.candidates.device)))


def standard_error(users: int, rate: float = 0.5) -> float:
    """The standard error of a hit rate `rate` measured on `users` users (binomial;
    0.5 is the worst case)."""
    return math.sqrt(rate * (1 - rate) / users) if users else math.nan


def describe(total: int, max_users: int = VALIDATION_USERS) -> str:
    """One line for a report: which users validation scores, and what that implies."""
    if total <= max_users:
        return f"validation on all {total} users"
    return (f"validation on a seeded sample of {max_users} of {total} users (standard error "
            f"of HR@10 at most {standard_error(max_users):.4f})")
