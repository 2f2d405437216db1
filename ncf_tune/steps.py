"""One training step on one batch: what training.train_epoch calls for each slice.

Two kinds, each one function that runs as it is (eager) or compiled (fused.py decides):

- MF with plain SGD: `mf_sgd.step`, by hand, the weights updated in place.
- everything else: the loss (`batch_loss`, or `distinct_batch_loss` for a model with a
  tower) through autograd, then the optimiser. Compiled, inductor derives a fused
  backward from the forward pass, and Adam is torch's fused CPU kernel
  (`training.build_optimizer`): one pass over each parameter instead of a dozen ops
  over all of them. A model with a tower (MLP, NeuMF) is given the batch as its
  distinct users and items, so that the tower's first layer runs once per user and
  item (models.py, `distinct_logits_and_norms`): a third less work a step for MLP
  512-256-128.

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
               labels: torch.Tensor, embedding_l2: torch.Tensor | None,
               bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's mean BCE loss, and the loss to minimise: that plus `embedding_l2` times
    the mean squared norm of the embedding rows used (None: no such term)."""
    with torch.autocast(users.device.type, torch.bfloat16, enabled=bf16):
        logits, norms = model.logits_and_norms(users, items)
    return _losses(logits, norms, labels, embedding_l2)


def distinct_batch_loss(model: nn.Module, users: torch.Tensor, user_of: torch.Tensor,
                        items: torch.Tensor, item_of: torch.Tensor, labels: torch.Tensor,
                        embedding_l2: torch.Tensor | None, bf16: bool
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_loss` for a batch given as its distinct users and items and each row's
    index into them, through the model's `distinct_logits_and_norms` (MLP, NeuMF)."""
    with torch.autocast(users.device.type, torch.bfloat16, enabled=bf16):
        logits, norms = model.distinct_logits_and_norms(users, user_of, items, item_of)
    return _losses(logits, norms, labels, embedding_l2)


def _losses(logits: torch.Tensor, norms: torch.Tensor, labels: torch.Tensor,
            embedding_l2: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
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
    compiled = _kind("mf", mf_sgd.step, "the MF step") if fuse else None
    biases = model.biases
    tables = (model.user.weight, model.item.weight,
              None if biases is None else biases.user.weight,
              None if biases is None else biases.item.weight, model.output.bias)
    # 0-d tensors beside the weights: one compiled step serves every lr of a schedule,
    # and on CUDA the step reads them without a copy from the host each batch
    l2 = torch.tensor(cfg.embedding_l2, device=model.user.weight.device)
    lr = torch.zeros((), device=model.user.weight.device)

    def step(users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        fn = compiled if compiled is not None and len(labels) == cfg.batch_size else mf_sgd.step
        lr.fill_(optimizer.param_groups[0]["lr"])
        return fn(*tables, users, items, labels, lr, l2)

    return step


def _autograd_step(model: nn.Module, optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                   fuse: bool) -> Step:
    bf16 = cfg.precision == "bf16"
    device = next(model.parameters()).device
    l2 = torch.tensor(cfg.embedding_l2, device=device) if cfg.embedding_l2 > 0 else None
    # A model with a tower (MLP, NeuMF) takes its batch as distinct users and items: the
    # tower's first layer, most of a step's work, is then applied once per user and item.
    # Their numbers change from batch to batch; the compiled step does not.
    distinct = hasattr(model, "distinct_logits_and_norms")
    loss_fn = distinct_batch_loss if distinct else batch_loss
    compiled = None
    if fuse:
        compiled = (_kind("distinct", loss_fn, "the training step", varying=(1, 3)) if distinct
                    else _kind("autograd", loss_fn, "the training step"))

    def step(users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        fn = compiled if compiled is not None and len(labels) == cfg.batch_size else loss_fn
        if distinct:
            users, user_of = torch.unique(users, return_inverse=True)
            items, item_of = torch.unique(items, return_inverse=True)
            loss, objective = fn(model, users, user_of, items, item_of, labels, l2, bf16)
        else:
            loss, objective = fn(model, users, items, labels, l2, bf16)
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        optimizer.step()
        return loss.detach()

    return step
