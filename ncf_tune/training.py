"""The training engine: one `fit` loop for all three models.

Each epoch: draw fresh negatives (sampling.py), shuffle once, train on slices of the
shuffled tensors, score the validation set (the paper's sampled ranking, or full ranking:
`TrainConfig.eval`), hand the epoch's figures to `on_epoch`.
All data stays on the training device; there is no per-sample Dataset or DataLoader.

Determinism: the epoch's negatives, batch order and dropout masks come from a
generator seeded with (seed, epoch). Nothing random carries over from one epoch to the
next except the weights and optimiser state, so a run resumed from an epoch-k
checkpoint ends with the same weights as a run that never stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ncf_tune import als, fused, ranking
from ncf_tune import checkpoint as ckpt
from ncf_tune.config import TrainConfig
from ncf_tune.data import EvalSet, IdMap, Split
from ncf_tune.errors import NcfError
from ncf_tune.metrics import from_ranks, positive_rank
from ncf_tune.models import GMF, build
from ncf_tune.sampling import EpochData, NegativeSampler
from ncf_tune.steps import make_step

TOP_K = 10  # HR@10 and NDCG@10, as in the paper


def choose_device(name: str = "auto") -> torch.device:
    """`auto` is the current CUDA device when there is one (under Ray Tune: the GPU the
    trial was given), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NcfError(f"--device {name}: CUDA is not available here; use --device cpu or auto")
    return torch.device(name)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer | None:
    """Adam, SGD or RMSprop with the notebook's settings; L2 as weight decay. Adam on the
    CPU is torch's fused kernel unless fused steps are switched off (fused.py). None for
    als: its sweeps solve for the weights and keep no state between epochs."""
    if cfg.optimizer == "als":
        return None
    params = [p for p in model.parameters() if p.requires_grad]  # not a dot product's h
    if cfg.optimizer == "adam":
        on_cpu = all(p.device.type == "cpu" for p in params)
        return torch.optim.Adam(params, lr=batch_lr(cfg), weight_decay=cfg.l2,
                                fused=(on_cpu and fused.mode() != "off") or None)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=batch_lr(cfg), momentum=cfg.momentum,
                               weight_decay=cfg.l2)
    # The notebook's RMSprop: alpha 0.99, no momentum (and, there, no L2; here, l2 applies).
    return torch.optim.RMSprop(params, lr=batch_lr(cfg), alpha=0.99, weight_decay=cfg.l2)


def batch_lr(cfg: TrainConfig) -> float:
    """`cfg.lr`, chosen at `cfg.lr_batch` rows a batch, as the step size at
    `cfg.batch_size` rows: batch size is a speed knob, not a quality knob.

    The rule, with r = batch_size / lr_batch:
    - SGD: lr * r (linear; Goyal et al. 2017). The loss is the batch mean, so a row's
      gradient is scaled by 1/batch; times r, every row moves as far per epoch at any
      batch size. For MF with plain SGD a row's step is then exactly the same (it
      depends on its own row only), up to rows met twice in one batch.
    - Adam, RMSprop: lr * sqrt(r) (the square-root rule of Malladi et al. 2022 for
      adaptive methods): their steps are normalised by the gradient's scale, so a larger
      batch does not move rows further per step, and r times fewer steps need sqrt(r)
      times longer ones.
    Measured: benchmarks/batch_invariance.py, docs/RESULTS.md.
    """
    r = cfg.batch_size / (cfg.lr_batch or cfg.batch_size)
    if r == 1:
        return cfg.lr
    return cfg.lr * (r if cfg.optimizer == "sgd" else math.sqrt(r))


def learning_rate(cfg: TrainConfig, progress: float) -> float:
    """The step size after `progress` epochs (fractional): a linear warmup over
    `warmup_epochs`, then constant or cosine-decayed to 0 at `cfg.epochs` (or at
    `cfg.schedule_epochs`, when set); the peak is `batch_lr(cfg)`.

    A pure function of progress, so a resumed run needs no scheduler state.
    """
    lr = batch_lr(cfg)
    if progress < cfg.warmup_epochs:
        return lr * (progress + 1e-3) / cfg.warmup_epochs
    if cfg.lr_schedule == "cosine":
        span = max((cfg.schedule_epochs or cfg.epochs) - cfg.warmup_epochs, 1e-9)
        done = min((progress - cfg.warmup_epochs) / span, 1.0)
        return lr * 0.5 * (1.0 + math.cos(math.pi * done))
    return lr


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based: the number of epochs completed; 0: a pretrained NeuMF untrained
    loss: float  # mean training loss over the epoch's rows (NaN for epoch 0: none trained)
    hr: float  # validation HR@10 (sampled or full ranking: TrainConfig.eval)
    ndcg: float  # validation NDCG@10
    seconds: float  # wall time of the whole epoch
    sample_seconds: float
    train_seconds: float
    eval_seconds: float

    @property
    def diverged(self) -> bool:
        return self.epoch > 0 and not math.isfinite(self.loss)


@dataclass
class TrainState:
    """What a checkpoint needs: passed to `on_epoch` after every epoch."""

    model: nn.Module
    optimizer: torch.optim.Optimizer | None  # None for als
    config: TrainConfig
    epoch: int
    num_users: int
    num_items: int
    ids: IdMap | None = None  # the data's raw ids: every checkpoint carries them

    def save(self, path: str, metrics: dict[str, float] | None = None) -> None:
        ckpt.save(path, self.model, self.optimizer, self.config, self.epoch, self.num_users,
                  self.num_items, metrics, self.ids)


@dataclass
class FitResult:
    model: nn.Module
    optimizer: torch.optim.Optimizer | None  # None for als
    history: list[EpochResult] = field(default_factory=list)

    @property
    def diverged(self) -> bool:
        return bool(self.history) and self.history[-1].diverged

    def best(self, metric: str = "ndcg") -> EpochResult | None:
        """The epoch with the highest validation `metric` ("hr" or "ndcg")."""
        finite = [r for r in self.history if not r.diverged]
        return max(finite, key=lambda r: getattr(r, metric), default=None)


EpochCallback = Callable[[EpochResult, TrainState], None]


def fit(cfg: TrainConfig, data: Split, device: torch.device | str = "cpu",
        on_epoch: EpochCallback | None = None, resume: ckpt.Checkpoint | None = None) -> FitResult:
    """Train `cfg.model` on `data` for `cfg.epochs` epochs, scoring validation each epoch.

    on_epoch: called after each epoch with its figures and the state to checkpoint.
    resume: a checkpoint of this config to continue from (its epoch onward).
    Returns the trained model and the per-epoch history. Stops early, after reporting
    it, on an epoch whose loss is NaN or inf (`FitResult.diverged`).

    A NeuMF built from pretrained GMF and MLP weights (`cfg.starts_pretrained`) is scored
    before it trains, as epoch 0: fine-tuning can make it worse (on the paper's ML-1M
    split every fine-tuning tried did), and choosing the best epoch then keeps the mix.
    """
    device = torch.device(device)
    if device.type == "cpu":
        # Adam's moments for embedding rows a batch did not touch decay towards zero and
        # turn denormal after a few hundred steps; x86 CPUs handle those in microcode, and
        # epochs grew from 12 s to 44 s (GMF-64). Flushing them to zero costs nothing.
        torch.set_flush_denormal(True)
    torch.manual_seed(cfg.seed)
    model = build(cfg.model, data.num_users, data.num_items, cfg.factors, cfg.layers,
                  cfg.dropout, cfg.init_std, cfg.biases, cfg.dot_product)
    start = 0
    if resume is None:
        ckpt.load_pretrained(model, cfg, data.num_users, data.num_items, data.ids)
    else:
        model.load_state_dict(resume.model_state)
        start = resume.epoch
    model.to(device)
    optimizer = build_optimizer(model, cfg)
    if optimizer is not None and resume is not None and resume.optimizer_state is not None:
        optimizer.load_state_dict(resume.optimizer_state)
        for group in optimizer.param_groups:  # the saved groups carry their run's choice
            if "fused" in optimizer.defaults:
                group["fused"] = optimizer.defaults["fused"]

    run_epoch = _epoch_function(model, optimizer, cfg, data, device)
    validation = _validation(cfg, data, device)
    result = FitResult(model, optimizer)
    if resume is None and cfg.starts_pretrained:
        t0 = time.perf_counter()
        hr, ndcg = validation(model)
        seconds = time.perf_counter() - t0
        res = EpochResult(0, math.nan, hr, ndcg, seconds, 0.0, 0.0, seconds)
        result.history.append(res)
        if on_epoch is not None:
            on_epoch(res, TrainState(model, optimizer, cfg, 0, data.num_users, data.num_items,
                                     data.ids))
    for epoch in range(start, cfg.epochs):
        gen = torch.Generator(device=device).manual_seed(cfg.seed * 1_000_003 + epoch)
        torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout masks
        t0 = time.perf_counter()
        loss, sample_s = run_epoch(epoch, gen)
        t2 = time.perf_counter()
        hr, ndcg = validation(model)
        t3 = time.perf_counter()
        res = EpochResult(epoch + 1, loss, hr, ndcg, t3 - t0, sample_s, t2 - t0 - sample_s,
                          t3 - t2)
        result.history.append(res)
        if on_epoch is not None:
            on_epoch(res, TrainState(model, optimizer, cfg, epoch + 1, data.num_users,
                                     data.num_items, data.ids))
        if res.diverged:
            break
    return result


EpochFunction = Callable[[int, torch.Generator], tuple[float, float]]


def _epoch_function(model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    cfg: TrainConfig, data: Split, device: torch.device) -> EpochFunction:
    """How `fit` trains one epoch, set up once: epoch(0-based index, generator) ->
    (mean training loss, seconds spent drawing negatives). Fresh negatives and
    `train_epoch`, or for als one closed-form sweep over users and items (als.py)."""
    if cfg.optimizer == "als":
        assert isinstance(model, GMF)  # TrainConfig.validate: als is the dot-product GMF's
        sweep = als.Sweeper(model, data.train_users, data.train_items, cfg.unobserved_weight,
                            cfg.embedding_l2)
        return lambda epoch, generator: (sweep(), 0.0)
    assert optimizer is not None
    sampler = NegativeSampler(data.train_users, data.train_items, data.num_items, device)

    def epoch_fn(epoch: int, generator: torch.Generator) -> tuple[float, float]:
        t0 = time.perf_counter()
        rows = sampler.epoch(cfg.num_negatives, generator)
        sample_s = time.perf_counter() - t0
        return train_epoch(model, optimizer, rows, cfg, epoch, generator), sample_s

    return epoch_fn


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, rows: EpochData,
                cfg: TrainConfig, epoch: int, generator: torch.Generator) -> float:
    """Epoch `epoch` (0-based) over `rows` in a random order, in batches of
    `cfg.batch_size`, stepping the learning rate each batch; each batch is one step of
    steps.py (the MF step by hand or autograd's, fused or eager). Returns the mean
    classification loss (without the L2 terms; NaN if diverged)."""
    model.train()
    # Shuffle once, then every batch is a contiguous slice: no gather per batch.
    perm = torch.randperm(len(rows), device=rows.users.device, generator=generator)
    # index_select, not [perm]: the same rows, without advanced indexing's per-element
    # overhead (a second per epoch of ML-1M's 9M rows on a CPU core).
    users, items, labels = (t.index_select(0, perm) for t in (rows.users, rows.items, rows.labels))
    total = torch.zeros((), device=users.device)
    steps = math.ceil(len(users) / cfg.batch_size)
    scheduled = cfg.lr_schedule != "constant" or cfg.warmup_epochs > 0
    # Fused (compiled) steps when the whole run has enough full batches to pay for
    # compiling them; see fused.py.
    fuse = fused.wanted(users.device, cfg.epochs * (len(users) // cfg.batch_size),
                        tower=hasattr(model, "distinct_logits_and_norms"))
    train_step = make_step(model, optimizer, cfg, fuse)
    for step in range(steps):
        if scheduled:
            lr = learning_rate(cfg, epoch + step / steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
        batch = slice(step * cfg.batch_size, (step + 1) * cfg.batch_size)
        loss = train_step(users[batch], items[batch], labels[batch])
        total += loss * len(labels[batch])  # no .item() per batch: no device sync
    return (total / len(users)).item()


def _validation(cfg: TrainConfig, data: Split, device: torch.device | str
                ) -> Callable[[nn.Module], tuple[float, float]]:
    """The per-epoch validation score, set up once: sampled or full ranking."""
    if cfg.eval == "full":
        return ranking.FullRanking(data, "validation", device)
    validation = to_device(data.validation, device)
    return lambda model: evaluate(model, validation)


def to_device(eval_set: EvalSet, device: torch.device | str) -> EvalSet:
    return EvalSet(eval_set.users.to(device), eval_set.candidates.to(device))


def evaluate(model: nn.Module, eval_set: EvalSet, k: int = TOP_K,
             max_rows: int | None = None) -> tuple[float, float]:
    """HR@k and NDCG@k of `model` on `eval_set`, scored in chunks of at most `max_rows`
    (user, item) pairs; by default 2^14 on a CPU, 2^21 on a GPU."""
    return from_ranks(ranks(model, eval_set, max_rows), k)


def ranks(model: nn.Module, eval_set: EvalSet, max_rows: int | None = None) -> torch.Tensor:
    """Each user's held-out item's 0-based rank among its candidates under `model`:
    [users] int64 (metrics.positive_rank), what HR and NDCG per user come from."""
    return positive_rank(masked(candidate_scores(model, eval_set, max_rows), eval_set))


def masked(scores: torch.Tensor, eval_set: EvalSet) -> torch.Tensor:
    """`scores` with -inf where a candidate is -1 (a dropped duplicate): never ranked."""
    return scores.masked_fill(eval_set.candidates < 0, float("-inf"))


@torch.no_grad()
def candidate_scores(model: nn.Module, eval_set: EvalSet, max_rows: int | None = None
                     ) -> torch.Tensor:
    """`model`'s logits for every user's candidates: [users x candidates], column 0 the
    held-out item (a -1 candidate scored as item 0: see `masked`)."""
    was_training = model.training
    model.eval()
    n, c = eval_set.candidates.shape
    if max_rows is None:
        # A CPU scores a chunk whose rows stay in its caches 2-6x faster (GMF-64, MLP
        # 512-256-128 on ML-1M); a GPU wants few, large launches.
        max_rows = 1 << 14 if eval_set.candidates.device.type == "cpu" else 1 << 21
    # Ours score many pairs with fixed weights faster through their scorer (models.py);
    # any other module mapping (users, items) to logits is called as it is.
    score = model.scorer() if hasattr(model, "scorer") else model
    out = []
    step = max(1, max_rows // c)
    for start in range(0, n, step):
        cand = eval_set.candidates[start:start + step]
        users = eval_set.users[start:start + step, None].expand_as(cand)
        out.append(score(users.reshape(-1), cand.clamp(min=0).reshape(-1)).view(cand.shape))
    model.train(was_training)
    if not out:
        return torch.zeros(0, c)
    return torch.cat(out)


def evaluate_full(model: nn.Module, split: Split, which: str = "test",
                  device: torch.device | str = "cpu") -> tuple[float, float]:
    """Full-ranking HR@10 and NDCG@10 of `model` on the split's "validation" or "test"
    users: each held-out item ranked against every item the user never interacted with
    (for the test item, the validation item is left out too: a known positive). See
    ranking.py. `model` must already be on `device`."""
    return ranking.FullRanking(split, which, device)(model, TOP_K)
