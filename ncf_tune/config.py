"""TrainConfig: every hyperparameter of one training run, typed, with the paper's defaults.

The same names are used everywhere: as `python -m ncf_tune.train` options (with dashes),
as keys of a `--config` YAML, as the parameters a search space may search, and in
`best_config.yaml`. `TrainConfig.from_dict` is the one place they are checked.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from ncf_tune.errors import NcfError
from ncf_tune.models import MODELS, NAMES

OPTIMIZERS = ("adam", "sgd", "rmsprop", "als")
LR_SCHEDULES = ("constant", "cosine")
PRECISIONS = ("fp32", "bf16")
EVALS = ("sampled", "full")


@dataclass(frozen=True)
class TrainConfig:
    model: str = "neumf"  # gmf | mlp | neumf
    factors: int = 8  # GMF embedding size: the paper's "predictive factors"
    layers: tuple[int, ...] = (64, 32, 16, 8)  # MLP tower; layers[0] = user + item embedding
    epochs: int = 20  # the paper trains 20 epochs at most; a pretrained NeuMF may take 0
    batch_size: int = 256  # paper: 256; a speed knob when lr_batch is set
    lr: float = 1e-3  # paper: Adam 1e-3; the step size at lr_batch rows a batch
    # The batch size `lr` was chosen at (0: batch_size itself). Trained at another batch
    # size, lr is scaled from it (training.batch_lr): linearly for SGD, by the square root
    # for Adam and RMSprop, so that a GPU-sized batch trains the model a CPU-sized one does.
    lr_batch: int = 0
    # adam | sgd | rmsprop (the notebook's three) | als: implicit alternating least
    # squares, for the dot-product GMF only (als.py: an epoch is one closed-form sweep
    # over users and items; of the training keys only factors, init_std, embedding_l2,
    # unobserved_weight, epochs and seed apply: the others are accepted and ignored).
    optimizer: str = "adam"
    momentum: float = 0.9  # sgd momentum (the notebook's 0.9); rmsprop uses 0, as the notebook
    lr_schedule: str = "constant"  # constant | cosine: decay to 0 at `epochs` (per batch)
    warmup_epochs: int = 0  # linear ramp from 0 to lr first: steadies large batches
    # Where the cosine reaches 0 when that is not `epochs` (0: at `epochs`). A search's
    # best_config.yaml trains the winner's best epochs of its trial's longer schedule, so
    # that retraining it gives the winner, not a model with a shorter, steeper decay.
    schedule_epochs: int = 0
    l2: float = 0.0  # weight decay on every parameter (the notebook's l2_regularization)
    # L2 on the embeddings each row uses, added to that row's loss (Rendle et al. 2020: 0.005).
    # Unlike weight decay, an embedding is pulled in as often as it is seen: popular
    # items and heavy users are not shrunk harder for being absent from a batch.
    # Under als it is lambda of Rendle et al. 2022, scaled the same way: each user's and
    # item's L2 weighs (its interactions + unobserved_weight * the other side's count).
    embedding_l2: float = 0.0
    # als: alpha0, the weight of every user-item pair's squared score pulling it to 0
    # (observed pairs are pulled to 1 with weight 1). Rendle et al. 2022's ML-20M and MSD
    # optima lie in 1e-3 .. 1; on the NCF paper's ML-1M split about 0.1 (docs/RESULTS.md).
    unobserved_weight: float = 0.1
    num_negatives: int = 4  # negatives per positive and epoch; paper: 4 (3-6 all good)
    init_std: float = 0.01  # embedding init N(0, std); paper 0.01, Rendle et al. 2020: 0.1
    dropout: float = 0.0  # after each tower layer; the paper uses none
    biases: bool = False  # add a learned user and item bias to the logit (Rendle et al.)
    # GMF only: fix h to ones, so the logit is the dot product p_u . q_i (+ biases): MF as
    # Rendle et al. 2020 train it (plain SGD, 256 epochs). A NeuMF built from such a GMF
    # starts from h = ones in its GMF half and trains it from there.
    dot_product: bool = False
    # bf16: the forward pass under torch.autocast (weights, optimiser, loss and evaluation
    # stay fp32). Pays off for wide towers on GPUs and on CPUs with AMX (NeuMF-64: 3x on
    # the 2-core Xeon this was built on); on CPUs without bf16 units it is slower.
    precision: str = "fp32"  # fp32 | bf16
    alpha: float = 0.5  # NeuMF from pretrained GMF+MLP: weight of the GMF output (paper: 0.5)
    # How each epoch's validation HR/NDCG@10 is measured, and so which epoch is best:
    # "sampled", the paper's (the held-out item against 99 sampled negatives), or "full"
    # (against every item the user never interacted with: what a deployed recommender
    # faces; sampled figures can rank models differently, Krichene and Rendle 2020).
    eval: str = "sampled"
    seed: int = 0  # fixes initialisation, negatives and batch order
    # Checkpoints to start from: NeuMF's GMF and MLP parts (several of each: NeuMF is built
    # from all of them side by side, see NeuMF.load_pretrained), or an MLP's embeddings
    # (one GMF). A single path may be given as a plain string.
    pretrain_gmf: tuple[str, ...] = ()
    pretrain_mlp: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for key in ("pretrain_gmf", "pretrain_mlp"):  # "a.pt" and None, as before lists
            object.__setattr__(self, key, _paths(getattr(self, key)))

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> TrainConfig:
        """Build and validate a config; `where` names the source in error messages.

        Unknown keys, wrong types and out-of-range values raise NcfError with one line
        naming the key (and the closest valid key for a typo).
        """
        known = {f.name: f for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = (f"; did you mean {close[0]!r}?" if close
                        else f"; valid keys: {', '.join(known)}")
                raise NcfError(f"{where}: unknown key {key!r}{hint}")
            kwargs[key] = _coerce(key, value, where)
        cfg = cls(**kwargs)
        cfg.validate(where)
        return cfg

    def validate(self, where: str = "config") -> None:
        """Raise NcfError on the first value out of range."""
        def bad(key: str, why: str) -> NcfError:
            return NcfError(f"{where}: {key}={getattr(self, key)!r} {why}")

        if self.model not in MODELS:
            raise bad("model", f"is not one of {', '.join(MODELS)}")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"is not one of {', '.join(OPTIMIZERS)}")
        for key in ("factors", "epochs", "batch_size", "num_negatives"):
            if getattr(self, key) < 1 and not (key == "epochs" and self.starts_pretrained
                                               and self.epochs == 0):
                raise bad(key, "must be at least 1")
        if not self.lr > 0:
            raise bad("lr", "must be > 0")
        if not self.init_std > 0:
            raise bad("init_std", "must be > 0")
        if self.lr_schedule not in LR_SCHEDULES:
            raise bad("lr_schedule", f"is not one of {', '.join(LR_SCHEDULES)}")
        if self.precision not in PRECISIONS:
            raise bad("precision", f"is not one of {', '.join(PRECISIONS)}")
        if self.eval not in EVALS:
            raise bad("eval", f"is not one of {', '.join(EVALS)}")
        if self.warmup_epochs < 0:
            raise bad("warmup_epochs", "must be >= 0")
        if self.lr_batch < 0:
            raise bad("lr_batch", "must be >= 0 (0: lr is for batch_size itself)")
        if self.schedule_epochs < 0:
            raise bad("schedule_epochs", "must be >= 0 (0: the schedule ends at epochs)")
        for key in ("l2", "embedding_l2"):
            if getattr(self, key) < 0:
                raise bad(key, "must be >= 0")
        if self.optimizer == "als":
            self._validate_als(where)
        if not 0 <= self.dropout < 1:
            raise bad("dropout", "must be in [0, 1)")
        if not 0 <= self.alpha <= 1:
            raise bad("alpha", "must be in [0, 1]")
        if not 0 <= self.momentum < 1:
            raise bad("momentum", "must be in [0, 1)")
        if self.model != "gmf":
            if len(self.layers) < 2 or any(n < 1 for n in self.layers):
                raise bad("layers", "needs at least two positive sizes, e.g. 64,32,16,8")
            if self.layers[0] % 2:
                raise bad("layers", "must start with an even size (user + item embedding)")
        if self.dot_product and self.model != "gmf":
            raise NcfError(f"{where}: dot_product is a GMF setting (h fixed to ones); a "
                           f"{NAMES[self.model]} takes it from its pretrained GMF; drop it")
        if self.model == "gmf" and (self.pretrain_gmf or self.pretrain_mlp):
            raise NcfError(f"{where}: a GMF is not built from pretrained models; drop "
                           "pretrain_gmf/pretrain_mlp")
        if self.model == "mlp" and self.pretrain_mlp:
            raise NcfError(f"{where}: pretrain_mlp is for NeuMF; an MLP can take pretrain_gmf")
        if self.model == "mlp" and len(self.pretrain_gmf) > 1:
            raise NcfError(f"{where}: pretrain_gmf: an MLP takes its embeddings from one GMF, "
                           f"not {len(self.pretrain_gmf)}; give one path")
        if self.model == "neumf" and bool(self.pretrain_gmf) != bool(self.pretrain_mlp):
            raise NcfError(f"{where}: NeuMF pretraining needs both pretrain_gmf and pretrain_mlp")

    def _validate_als(self, where: str) -> None:
        if self.model != "gmf" or not self.dot_product:
            raise NcfError(f"{where}: optimizer=als trains a GMF with dot_product: true (plain "
                           f"MF); set model: gmf and dot_product: true, or use adam/sgd")
        if not self.embedding_l2 > 0:
            raise NcfError(f"{where}: embedding_l2={self.embedding_l2!r}: optimizer=als needs "
                           "embedding_l2 > 0 (its lambda; e.g. 0.01), or its systems can be "
                           "singular")
        if not self.unobserved_weight > 0:
            raise NcfError(f"{where}: unobserved_weight={self.unobserved_weight!r} must be > 0 "
                           "(alpha0 of ALS; e.g. 0.1)")

    @property
    def starts_pretrained(self) -> bool:
        """A NeuMF built from trained GMF and MLP weights: it is scored before its first
        epoch too (epoch 0), and `epochs: 0` means "use the pretrained mix as it is"."""
        return self.model == "neumf" and bool(self.pretrain_gmf) and bool(self.pretrain_mlp)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (layers as a list): safe for YAML, JSON and torch.save.
        A pretrain key is None without a path, a string with one, a list with several."""
        d = asdict(self)
        d["layers"] = list(self.layers)
        for key in ("pretrain_gmf", "pretrain_mlp"):
            paths = d[key]
            d[key] = None if not paths else paths[0] if len(paths) == 1 else list(paths)
        return d

    def replace(self, **changes: Any) -> TrainConfig:
        return replace(self, **changes)


def _coerce(key: str, value: Any, where: str) -> Any:
    """Accept what YAML, argparse and Optuna hand over; refuse anything else by name."""
    default = TrainConfig.__dataclass_fields__[key].default
    try:
        if key == "layers":
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            if not isinstance(value, (list, tuple)):
                raise TypeError
            return tuple(_int(v) for v in value)
        if key in ("pretrain_gmf", "pretrain_mlp"):
            if isinstance(value, (list, tuple)) and not all(isinstance(v, str) for v in value):
                raise TypeError
            if not isinstance(value, (str, list, tuple, type(None))):
                raise TypeError
            return _paths(value)
        if isinstance(default, bool):
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(default, int):
            return _int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError
            return value.lower()
    except (TypeError, ValueError):
        kind = ("a list of integers" if key == "layers" else "a path or a list of paths"
                if key.startswith("pretrain_") else type(default).__name__)
        raise NcfError(f"{where}: {key}={value!r} is not {kind}") from None
    return value


def _paths(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    return (str(value),) if isinstance(value, str) else tuple(str(v) for v in value)


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, float) and not value.is_integer():
        raise ValueError
    if isinstance(value, str):
        value = float(value) if "." in value or "e" in value.lower() else int(value)
        if isinstance(value, float) and not value.is_integer():
            raise ValueError
    return int(value)
