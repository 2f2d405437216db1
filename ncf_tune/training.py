"""The training engine: one `fit` loop for all three models.

Each epoch: draw fresh negatives (sampling.py), shuffle once, train on slices of the
shuffled tensors, score the validation set (the paper's sampled ranking, or full ranking:
`TrainConfig.eval`), hand the epoch's figures to `on_epoch`.
All data stays on the training device; there is no per-sample Dataset or DataLoader.

Determinism: the epoch's negatives, batch order and dropout masks come from a
generator seeded with (seed, epoch). Nothing random carries over from one epoch to the
next except the weights and optimiser state, so a run resumed from an epoch-k
checkpoint ends with the same weights as a run that never stopped.

Large data: an epoch of more than `sampling.REPORT_POSITIVES` positives is trained in
parts, each drawn in chunks (sampling.py's `EpochPlan`, seeded per (seed, epoch, chunk)),
and validated and reported after each part: `on_epoch` is then called `parts` times an
epoch, with `EpochResult.part`. A run resumed from a mid-epoch checkpoint goes on from
the part after it, with the same weights as one that never stopped. ML-1M's epochs are
one part: trained as before, bit for bit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ncf_tune import als, eval_sample, fused, ranking
from ncf_tune import checkpoint as ckpt
from ncf_tune.config import TrainConfig
from ncf_tune.data import EvalSet, IdMap, Split
from ncf_tune.errors import NcfError
from ncf_tune.metrics import from_ranks, positive_rank
from ncf_tune.models import GMF, build
from ncf_tune.sampling import EpochData, EpochPlan, NegativeSampler, chunk_seed, plan
from ncf_tune.steps import make_step

TOP_K = 10  # HR@10 and NDCG@10, as in the paper
CUT_CHECK_STEPS = 16  # how often a run with a `Cut` looks at the clock (steps)


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
    # An epoch trained in parts (large data) reports after each: this is part `part` of
    # `parts` of epoch `epoch`; the loss and seconds are the part's.
    part: int = 1
    parts: int = 1
    # Reported at a time budget's cut (`Cut`): how much of part `part` was trained.
    cut: float | None = None

    @property
    def diverged(self) -> bool:
        return self.epoch > 0 and not math.isfinite(self.loss)

    @property
    def progress(self) -> float:
        """Epochs trained, fractional mid-epoch: 2.5 after half of the third epoch."""
        if not self.epoch:
            return 0.0
        part = self.part if self.cut is None else self.part - 1 + self.cut
        return self.epoch - 1 + part / self.parts

    @property
    def completed(self) -> int:
        """Whole epochs trained when this was reported."""
        return self.epoch if self.part == self.parts and self.cut is None else self.epoch - 1


@dataclass
class Cut:
    """A time by which a run must have reported: a stage's time budget ends then
    (stage.py). A run still short of its next report when the time comes stops
    training early enough to score validation, reports what it has (`EpochResult.cut`)
    and ends, so that a stage whose every report takes longer than its budget still
    hands on a partly trained model instead of nothing.

    at: the `time.time()` by which validation must start (the caller leaves room after
    it for the checkpoint and the report). eval_rows: the (user, item) pairs a
    validation scores; their time is guessed from the training steps' (a forward pass
    is about a third of a step; a step of fewer than MIN_BATCH rows is counted as one of
    MIN_BATCH, as its time is mostly overhead that validation's large chunks do not pay
    per pair)."""

    at: float
    eval_rows: int
    hit: float | None = None  # the share of the rows in hand trained when it was cut

    MIN_BATCH = 1024

    def due(self, steps: int, seconds: float, batch_size: int) -> bool:
        """Whether to stop now, after `steps` steps of `batch_size` rows in `seconds`."""
        per_row = seconds / max(steps * max(batch_size, self.MIN_BATCH), 1)
        return time.time() + self.eval_rows * per_row / 3 >= self.at


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
    part: int = 0  # parts of epoch `epoch` + 1 trained as well (an epoch in parts), else 0

    def save(self, path: str, metrics: dict[str, float] | None = None) -> None:
        if self.part:  # where a resumed run goes on from, mid-epoch
            metrics = {**(metrics or {}), "part": self.part}
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
        on_epoch: EpochCallback | None = None, resume: ckpt.Checkpoint | None = None,
        cut: Cut | None = None) -> FitResult:
    """Train `cfg.model` on `data` for `cfg.epochs` epochs, scoring validation each epoch.

    on_epoch: called after each epoch with its figures and the state to checkpoint.
    resume: a checkpoint of this config to continue from (its epoch onward).
    Returns the trained model and the per-epoch history. Stops early, after reporting
    it, on an epoch whose loss is NaN or inf (`FitResult.diverged`).

    cut: a time by which to have reported; a run short of a report then reports what it
    has and stops (`Cut`; the last `EpochResult.cut` says how far it got).

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
    start, start_part = 0, 0
    if resume is None:
        ckpt.load_pretrained(model, cfg, data.num_users, data.num_items, data.ids)
    else:
        model.load_state_dict(resume.model_state)
        start, start_part = resume.epoch, int(resume.metrics.get("part", 0))
    model.to(device)
    optimizer = build_optimizer(model, cfg)
    if optimizer is not None and resume is not None and resume.optimizer_state is not None:
        optimizer.load_state_dict(resume.optimizer_state)
        for group in optimizer.param_groups:  # the saved groups carry their run's choice
            if "fused" in optimizer.defaults:
                group["fused"] = optimizer.defaults["fused"]

    # ALS sweeps over the positives themselves: no negatives to draw
    sampler = None if cfg.optimizer == "als" else NegativeSampler(
        data.train_users, data.train_items, data.num_items, device)
    run_epoch = _epoch_function(model, optimizer, cfg, data, sampler, cut)
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
    plan_ = None if sampler is None else plan(len(sampler.users), cfg.num_negatives)
    for epoch in range(start, cfg.epochs):
        if plan_ is not None and not plan_.whole:
            if not _fit_parts(model, optimizer, sampler, validation, cfg, data, device, epoch,
                              plan_, start_part if epoch == start else 0, result, on_epoch,
                              cut):
                break
            continue
        gen = torch.Generator(device=device).manual_seed(chunk_seed(cfg.seed, epoch))
        torch.manual_seed(chunk_seed(cfg.seed, epoch))  # dropout masks
        t0 = time.perf_counter()
        loss, sample_s = run_epoch(epoch, gen)
        t2 = time.perf_counter()
        hr, ndcg = validation(model)
        t3 = time.perf_counter()
        hit = None if cut is None else cut.hit
        res = EpochResult(epoch + 1, loss, hr, ndcg, t3 - t0, sample_s, t2 - t0 - sample_s,
                          t3 - t2, cut=hit)
        result.history.append(res)
        if on_epoch is not None:
            on_epoch(res, TrainState(model, optimizer, cfg, res.completed, data.num_users,
                                     data.num_items, data.ids))
        if res.diverged or hit is not None:
            break
    return result


EpochFunction = Callable[[int, torch.Generator], tuple[float, float]]


def _epoch_function(model: nn.Module, optimizer: torch.optim.Optimizer | None,
                    cfg: TrainConfig, data: Split, sampler: NegativeSampler | None,
                    cut: Cut | None) -> EpochFunction:
    """How `fit` trains one epoch, set up once: epoch(0-based index, generator) ->
    (mean training loss, seconds spent drawing negatives). Fresh negatives and
    `train_epoch`, or for als one closed-form sweep over users and items (als.py)."""
    if cfg.optimizer == "als":
        assert isinstance(model, GMF)  # TrainConfig.validate: als is the dot-product GMF's
        sweep = als.Sweeper(model, data.train_users, data.train_items, cfg.unobserved_weight,
                            cfg.embedding_l2)
        return lambda epoch, generator: (sweep(), 0.0)
    assert optimizer is not None and sampler is not None

    def epoch_fn(epoch: int, generator: torch.Generator) -> tuple[float, float]:
        t0 = time.perf_counter()
        rows = sampler.epoch(cfg.num_negatives, generator)
        sample_s = time.perf_counter() - t0
        return train_epoch(model, optimizer, rows, cfg, epoch, generator, cut=cut), sample_s

    return epoch_fn


def _fit_parts(model: nn.Module, optimizer: torch.optim.Optimizer, sampler: NegativeSampler,
               validation: Callable[[nn.Module], tuple[float, float]], cfg: TrainConfig,
               data: Split, device: torch.device, epoch: int, cut_plan: EpochPlan,
               first_part: int,
               result: FitResult, on_epoch: EpochCallback | None,
               deadline: Cut | None = None) -> bool:
    """Epoch `epoch` (0-based) of a large split, part by part from `first_part`: each
    part's chunks drawn and trained in turn (sampling.py's rule), then validated and
    reported. Returns False when a part diverged or `deadline` cut it (the run stops)."""
    gen = torch.Generator(device=device).manual_seed(chunk_seed(cfg.seed, epoch))
    order = sampler.permutation(gen)
    # Compiled steps when the whole run pays for them, as for an epoch drawn whole.
    run_steps = cfg.epochs * (cut_plan.positives * (1 + cfg.num_negatives) // cfg.batch_size)
    for part in range(first_part, cut_plan.parts):
        t0 = time.perf_counter()
        sample_s, total, rows = 0.0, 0.0, 0
        for chunk in cut_plan.chunks_of(part):
            seed = chunk_seed(cfg.seed, epoch, chunk)
            gen = torch.Generator(device=device).manual_seed(seed)
            torch.manual_seed(seed)  # dropout masks
            lo, hi = cut_plan.chunk_bounds(chunk)
            ts = time.perf_counter()
            chunk_rows = sampler.chunk(order[lo:hi], cfg.num_negatives, gen)
            sample_s += time.perf_counter() - ts
            loss = train_epoch(model, optimizer, chunk_rows, cfg, epoch, gen,
                               start=lo / cut_plan.positives, span=(hi - lo) / cut_plan.positives,
                               run_steps=run_steps, cut=deadline)
            trained = len(chunk_rows)
            if deadline is not None and deadline.hit is not None:
                trained = round(trained * deadline.hit)
                per = cut_plan.chunks // cut_plan.parts
                deadline.hit = (chunk - cut_plan.chunks_of(part).start + deadline.hit) / per
            total += loss * trained
            rows += trained
            del chunk_rows
            if deadline is not None and deadline.hit is not None:
                break
        t2 = time.perf_counter()
        hr, ndcg = validation(model)
        t3 = time.perf_counter()
        hit = None if deadline is None else deadline.hit
        res = EpochResult(epoch + 1, total / max(rows, 1), hr, ndcg, t3 - t0, sample_s,
                          t2 - t0 - sample_s, t3 - t2, part=part + 1, parts=cut_plan.parts, cut=hit)
        result.history.append(res)
        if on_epoch is not None:
            done = part + 1 == cut_plan.parts and hit is None
            whole_parts = part if hit is not None else part + 1
            on_epoch(res, TrainState(model, optimizer, cfg, epoch + 1 if done else epoch,
                                     data.num_users, data.num_items, data.ids,
                                     part=0 if done else whole_parts))
        if res.diverged or hit is not None:
            return False
    return True


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, rows: EpochData,
                cfg: TrainConfig, epoch: int, generator: torch.Generator,
                start: float = 0.0, span: float = 1.0, run_steps: int | None = None,
                cut: Cut | None = None) -> float:
    """Epoch `epoch` (0-based) over `rows` in a random order, in batches of
    `cfg.batch_size`, stepping the learning rate each batch; each batch is one step of
    steps.py (the MF step by hand or autograd's, fused or eager). Returns the mean
    classification loss (without the L2 terms; NaN if diverged).

    A chunk of an epoch in chunks: `rows` are that chunk's, which starts `start` into
    the epoch and spans `span` of it (the learning rate follows), and `run_steps` is
    the whole run's number of full batches (whether to compile the step). cut: stop
    when it is due (`Cut`), setting its `hit` to the share of `rows` trained; the loss is
    then the mean over those."""
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
    if run_steps is None:
        run_steps = cfg.epochs * (len(users) // cfg.batch_size)
    fuse = fused.wanted(users.device, run_steps, tower=hasattr(model, "distinct_logits_and_norms"))
    wide = users.dtype == torch.int64  # a chunk's int32 ids are widened batch by batch
    train_step = make_step(model, optimizer, cfg, fuse)
    began = time.perf_counter()
    for step in range(steps):
        if cut is not None and step and step % CUT_CHECK_STEPS == 0 \
                and cut.due(step, time.perf_counter() - began, cfg.batch_size):
            cut.hit = step / steps
            return (total / (step * cfg.batch_size)).item()
        if scheduled:
            lr = learning_rate(cfg, epoch + start + span * step / steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
        batch = slice(step * cfg.batch_size, (step + 1) * cfg.batch_size)
        if wide:
            loss = train_step(users[batch], items[batch], labels[batch])
        else:
            loss = train_step(users[batch].long(), items[batch].long(), labels[batch])
        total += loss * len(labels[batch])  # no .item() per batch: no device sync
    return (total / len(users)).item()


def _validation(cfg: TrainConfig, data: Split, device: torch.device | str
                ) -> Callable[[nn.Module], tuple[float, float]]:
    """The per-epoch validation score, set up once: sampled or full ranking."""
    if cfg.eval == "full":
        return ranking.FullRanking(data, "validation", device,
                                   max_users=eval_sample.VALIDATION_USERS)
    validation = to_device(eval_sample.user_sample(data.validation,
                                                   eval_sample.VALIDATION_USERS, data.seed),
                           device)
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
    ranking.py. `model` must already be on `device`. On more than
    `eval_sample.FULL_RANKING_USERS` users, on a seeded sample of that many."""
    return ranking.FullRanking(split, which, device,
                               max_users=eval_sample.FULL_RANKING_USERS)(model, TOP_K)
