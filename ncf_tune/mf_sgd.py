"""Plain SGD on MF (GMF with `dot_product`) in one hand-written step per batch.

Rendle et al.'s MF recipe (benchmarks/paper_configs/gmf.yaml) is 256 epochs of plain
SGD on a dot product, the longest part of the paper table on a CPU. The autograd step
spends most of its time on work a dot product does not need: a dense gradient for both
whole embedding tables every batch (zeroed, scattered into, then added to the weights),
and the forward pass's elementwise products saved and multiplied again. Written out,
the gradient is short. With g = sigmoid(logit) - label for each of the batch's B rows,

    loss   = mean BCE(p_u . q_i + b_u + b_i + b, label)
             + embedding_l2 * mean(|p_u|^2 + |q_i|^2 + b_u^2 + b_i^2)
    d p_u  = (g q_i + 2 embedding_l2 p_u) / B      (and q_i alike, with p_u)
    d b_u  = (g + 2 embedding_l2 b_u) / B          (and b_i alike)
    d b    = mean g                                (the global offset: no L2)

and a step adds -lr times each row's gradient to the rows the batch used (accumulated,
so a user twice in a batch gets both). It is the autograd step's maths up to float
rounding (tests/test_training.py compares the two), about twice as fast on a CPU core
at 64-128 factors eagerly (benchmarks/mf_sgd_speed.py). Compiled, inductor turns it
into one pass over the batch (gathers, dot products, gradients) and one per table (the
row updates), about 4x faster again (benchmarks/epoch_speed.py). steps.py runs it one
way or the other; training.train_epoch uses it whenever `applies` says so.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ncf_tune.config import TrainConfig
from ncf_tune.models import GMF


def applies(model: nn.Module, cfg: TrainConfig) -> bool:
    """True when `cfg` trains `model` as plain MF with plain SGD on the CPU: a GMF with h
    fixed to ones, SGD without momentum or weight decay, in fp32. Anything else goes
    through autograd. (Not on CUDA: there index_add_ adds with atomics in no fixed
    order, and a seed would no longer fix the weights; the GPU is fast enough anyway.)"""
    return (isinstance(model, GMF) and cfg.dot_product and cfg.optimizer == "sgd"
            and cfg.momentum == 0 and cfg.l2 == 0 and cfg.precision == "fp32"
            and model.user.weight.device.type == "cpu")


def step(user: torch.Tensor, item: torch.Tensor, user_bias: torch.Tensor | None,
               item_bias: torch.Tensor | None, offset: torch.Tensor, users: torch.Tensor,
               items: torch.Tensor, labels: torch.Tensor, lr: torch.Tensor,
               embedding_l2: torch.Tensor) -> torch.Tensor:
    """One SGD step on a batch, on the model's tensors (user and item tables, their bias
    columns or None, the global offset), updated in place. Eager as it is, or compiled
    (steps.py): one function both ways. `lr` and `embedding_l2` are 0-d tensors, so that
    one compiled step serves every learning rate of a schedule and every trial of a
    search. Returns the batch's mean BCE loss (0-d, without the L2 term)."""
    with torch.no_grad():
        p, q = user[users], item[items]
        logits = (p * q).sum(1) + offset
        if user_bias is not None and item_bias is not None:
            bu, bi = user_bias[users].squeeze(1), item_bias[items].squeeze(1)
            logits = logits + bu + bi
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        g = torch.sigmoid(logits) - labels
        decay, scale = 2.0 * embedding_l2, -lr / len(labels)
        col = g.unsqueeze(1)
        # Both gradients from the rows as they were: inductor keeps them in buffers
        # before it adds the first one to its table.
        user.index_put_((users,), scale * (col * q + decay * p), accumulate=True)
        item.index_put_((items,), scale * (col * p + decay * q), accumulate=True)
        if user_bias is not None and item_bias is not None:
            user_bias.index_put_((users,), (scale * (g + decay * bu)).unsqueeze(1),
                                 accumulate=True)
            item_bias.index_put_((items,), (scale * (g + decay * bi)).unsqueeze(1),
                                 accumulate=True)
        offset.add_(scale * g.sum())
    return loss
