"""One training step on one batch: what training.train_epoch calls for each slice.

Two kinds. Plain MF with plain SGD goes by hand (mf_sgd.py); every other model and
optimiser through autograd. Each runs eagerly or fused, as fused.py decides:

- MF: `mf_sgd.fused_step` compiled whole, the weights updated in place.
- autograd: the forward pass and the loss compiled (inductor derives a fused backward
  from them), and Adam as torch's fused CPU kernel (`training.build_optimizer`): one
  pass over each parameter instead of a dozen ops over all of them. A model with a
  tower (MLP, NeuMF) is given the batch as its distinct users and items, so that the
  tower's first layer runs once per user and item (models.py,
  `distinct_logits_and_norms`): a third less work a step for MLP 512-256-128.

A batch shorter than the batch size (an epoch's last) runs eagerly: compiled, it would
be a variant of its own, compiled for one batch an epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ncf_tune import mf_sgd
from ncf_tune.config import TrainConfig
from ncf_tune.fused import Compiled

# (users, items, labels) -> the batch's mean BCE loss (0-d, without the L2 term)
Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

_compiled: dict[str, Compiled] = {}  # one per kind and process: its variants stay cached


def compiled_steps() -> dict[str, Compiled]:
    """The compiled steps this process has made, by kind ("mf", "autograd", "distinct"):
    each says whether compiling failed and how long it took."""
    return dict(_compiled)


def batch_loss(model: nn.Module, users: torch.Tensor, items: torch.Tensor,
               labels: torch.Tensor, embedding_l2: float | torch.Tensor | None,
               bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's mean BCE loss, and the loss to minimise: that plus `embedding_l2` times
    the mean squared norm of the embedding rows used (None: no such term)."""
    with torch.autocast(users.device.type, torch.bfloat16, enabled=bf16):
        logits, norms = model.logits_and_norms(users, items)
    return _losses(logits, norms, labels, embedding_l2)


def distinct_batch_loss(model: nn.Module, users: torch.Tensor, user_of: torch.Tensor,
                        items: torch.Tensor, item_of: torch.Tensor, labels: torch.Tensor,
                        embedding_l2: float | torch.Tensor | None, bf16: bool
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_loss` for a batch given as its distinct users and items and each row's
    index into them, through the model's `distinct_logits_and_norms` (MLP, NeuMF)."""
    with torch.autocast(users.device.type, torch.bfloat16, enabled=bf16):
        logits, norms = model.distinct_logits_and_norms(users, user_of, items, item_of)
    return _losses(logits, norms, labels, embedding_l2)


def _losses(logits: torch.Tensor, norms: torch.Tensor, labels: torch.Tensor,
            embedding_l2: float | torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    loss = F.binary_cross_entropy_with_logits(logits.float(), labels)
    if embedding_l2 is None:
        return loss, loss
    return loss, loss + embedding_l2 * norms.float().mean()


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
              fuse: bool) -> Step:
    """The step for `cfg` on `model`: fused (compiled) when `fuse`, else eager. The step
    reads the learning rate from the optimiser's first group at each call."""
    if mf_sgd.applies(model, cfg):
        return _mf_step(model, optimizer, cfg, fuse)
    return _autograd_step(model, optimizer, cfg, fuse)


def _kind(name: str, fn: Callable, what: str, varying: tuple[int, ...] = ()) -> Compiled:
    if name not in _compiled:
        _compiled[name] = Compiled(fn, what, varying)
    return _compiled[name]


def _mf_step(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
             fuse: bool) -> Step:
    def eager(users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return mf_sgd.step(model, users, items, labels, optimizer.param_groups[0]["lr"],
                           cfg.embedding_l2)

    if not fuse:
        return eager
    compiled = _kind("mf", mf_sgd.fused_step, "the MF step")
    biases = model.biases
    user_bias = None if biases is None else biases.user.weight
    item_bias = None if biases is None else biases.item.weight
    l2 = torch.tensor(cfg.embedding_l2)

    def step(users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if len(labels) != cfg.batch_size:
            return eager(users, items, labels)
        lr = torch.tensor(optimizer.param_groups[0]["lr"])
        return compiled(model.user.weight, model.item.weight, user_bias, item_bias,
                        model.output.bias, users, items, labels, lr, l2)

    return step


def _autograd_step(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                   fuse: bool) -> Step:
    bf16 = cfg.precision == "bf16"
    l2 = cfg.embedding_l2 if cfg.embedding_l2 > 0 else None
    l2_tensor = None if l2 is None else torch.tensor(l2)
    # A model with a tower (MLP, NeuMF) takes its batch as distinct users and items: the
    # tower's first layer, most of a step's work, is then applied once per user and item.
    # Their numbers change from batch to batch; the compiled step does not.
    distinct = hasattr(model, "distinct_logits_and_norms")
    compiled = None
    if fuse and distinct:
        compiled = _kind("distinct", distinct_batch_loss, "the training step", varying=(1, 3))
    elif fuse:
        compiled = _kind("autograd", batch_loss, "the training step")

    def step(users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if compiled is None or len(labels) != cfg.batch_size:
            loss, objective = batch_loss(model, users, items, labels, l2, bf16)
        elif distinct:
            users, user_of = torch.unique(users, return_inverse=True)
            items, item_of = torch.unique(items, return_inverse=True)
            loss, objective = compiled(model, users, user_of, items, item_of, labels,
                                       l2_tensor, bf16)
        else:
            loss, objective = compiled(model, users, items, labels, l2_tensor, bf16)
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        return loss.detach()

    return step
