"""GMF, MLP and NeuMF (He et al., WWW 2017). Every model maps (users, items) to logits.

    GMF    logit = h . (p_u * q_i)                       p, q: `factors`-dim embeddings
    MLP    logit = h . tower([p_u ; q_i])                p, q: layers[0] / 2 each
    NeuMF  logit = h . [p_u * q_i ; tower([p'_u ; q'_i])] separate embeddings per branch

With `biases`, each model adds b_u + b_i to its logit (Rendle et al. 2020's MF has them).

Logits, not probabilities: the loss is BCEWithLogitsLoss, which is stable where a
sigmoid followed by BCELoss (the notebook) saturates.

NeuMF works best started from a trained GMF and a trained MLP (paper, section 3.4.1):
`NeuMF.from_pretrained` copies their embeddings and tower and mixes their output layers
as [alpha * h_GMF ; (1 - alpha) * h_MLP].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MODELS = ("gmf", "mlp", "neumf")


def _embedding(n: int, dim: int, std: float) -> nn.Embedding:
    emb = nn.Embedding(n, dim)
    nn.init.normal_(emb.weight, 0.0, std)  # the paper's N(0, 0.01); Rendle et al. use 0.1
    return emb


def _output(in_features: int) -> nn.Linear:
    out = nn.Linear(in_features, 1)
    bound = math.sqrt(3.0 / in_features)  # LeCun uniform, as the paper's Keras code
    nn.init.uniform_(out.weight, -bound, bound)
    nn.init.zeros_(out.bias)
    return out


def _sq(x: torch.Tensor) -> torch.Tensor:
    return x.square().sum(-1)


class Biases(nn.Module):
    """A learned offset per user and per item, added to the logit. The item's lets a
    model learn popularity, which the sampled-negatives metric rewards, without spending
    factors on it. Zero at the start: a fresh model scores as one without."""

    def __init__(self, num_users: int, num_items: int) -> None:
        super().__init__()
        self.user = nn.Embedding(num_users, 1)
        self.item = nn.Embedding(num_items, 1)
        nn.init.zeros_(self.user.weight)
        nn.init.zeros_(self.item.weight)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.user(users) + self.item(items)).squeeze(-1)

    def norms(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return _sq(self.user(users)) + _sq(self.item(items))


def _biases(num_users: int, num_items: int, on: bool) -> Biases | None:
    return Biases(num_users, num_items) if on else None


def _plus_biases(logits: torch.Tensor, biases: Biases | None, users: torch.Tensor,
                 items: torch.Tensor) -> torch.Tensor:
    return logits if biases is None else logits + biases(users, items)


def _bias_norms(biases: Biases | None, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    return biases.norms(users, items) if biases is not None else torch.zeros(())


class Tower(nn.Module):
    """Linear + ReLU layers (+ dropout). Parameter names do not depend on dropout, so a
    tower trained with dropout loads into one without, and back."""

    def __init__(self, layers: tuple[int, ...], dropout: float = 0.0) -> None:
        super().__init__()
        self.linears = nn.ModuleList()
        for n_in, n_out in zip(layers[:-1], layers[1:], strict=False):
            linear = nn.Linear(n_in, n_out)
            nn.init.xavier_uniform_(linear.weight)  # Glorot, as the paper's Keras code
            nn.init.zeros_(linear.bias)
            self.linears.append(linear)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for linear in self.linears:
            x = F.relu(linear(x))
            if self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
        return x


class GMF(nn.Module):
    def __init__(self, num_users: int, num_items: int, factors: int = 8,
                 init_std: float = 0.01, biases: bool = False) -> None:
        super().__init__()
        self.user = _embedding(num_users, factors, init_std)
        self.item = _embedding(num_items, factors, init_std)
        self.output = _output(factors)
        self.biases = _biases(num_users, num_items, biases)

    def features(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.user(users) * self.item(items)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        logits = self.output(self.features(users, items)).squeeze(-1)
        return _plus_biases(logits, self.biases, users, items)

    def embedding_norms(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Per row: squared L2 norm of the user and item embeddings (and biases) it uses."""
        return (_sq(self.user(users)) + _sq(self.item(items))
                + _bias_norms(self.biases, users, items))


class MLP(nn.Module):
    def __init__(self, num_users: int, num_items: int, layers: tuple[int, ...] = (64, 32, 16, 8),
                 dropout: float = 0.0, init_std: float = 0.01, biases: bool = False) -> None:
        super().__init__()
        self.user = _embedding(num_users, layers[0] // 2, init_std)
        self.item = _embedding(num_items, layers[0] // 2, init_std)
        self.tower = Tower(tuple(layers), dropout)
        self.output = _output(layers[-1])
        self.biases = _biases(num_users, num_items, biases)

    def features(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.tower(torch.cat([self.user(users), self.item(items)], dim=-1))

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        logits = self.output(self.features(users, items)).squeeze(-1)
        return _plus_biases(logits, self.biases, users, items)

    def embedding_norms(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (_sq(self.user(users)) + _sq(self.item(items))
                + _bias_norms(self.biases, users, items))

    @torch.no_grad()
    def embeddings_from(self, gmf: GMF) -> None:
        """Start from a trained GMF's embeddings (the notebook's MLP `pretrain`)."""
        self.user.weight.copy_(gmf.user.weight)
        self.item.weight.copy_(gmf.item.weight)


class NeuMF(nn.Module):
    def __init__(self, num_users: int, num_items: int, factors: int = 8,
                 layers: tuple[int, ...] = (64, 32, 16, 8), dropout: float = 0.0,
                 init_std: float = 0.01, biases: bool = False) -> None:
        super().__init__()
        # Two full sub-models without their output layers (and biases: NeuMF has one
        # pair): same parameter names as a trained GMF/MLP, so pretraining is a copy.
        self.gmf = GMF(num_users, num_items, factors, init_std)
        self.mlp = MLP(num_users, num_items, layers, dropout, init_std)
        del self.gmf.output, self.mlp.output
        self.output = _output(factors + layers[-1])
        self.biases = _biases(num_users, num_items, biases)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        both = torch.cat([self.gmf.features(users, items), self.mlp.features(users, items)], -1)
        return _plus_biases(self.output(both).squeeze(-1), self.biases, users, items)

    def embedding_norms(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.gmf.embedding_norms(users, items) + self.mlp.embedding_norms(users, items)
                + _bias_norms(self.biases, users, items))

    @torch.no_grad()
    def load_pretrained(self, gmf: GMF, mlp: MLP, alpha: float = 0.5) -> None:
        """Copy a trained GMF and MLP in; output = [alpha * h_GMF ; (1 - alpha) * h_MLP].

        Unlike the notebook, the tower's biases are copied too, so NeuMF starts out
        computing exactly alpha * GMF + (1 - alpha) * MLP (in logits); so are the user and
        item biases, mixed the same way, when NeuMF has them (a missing one counts as 0).
        """
        for name, param in self.gmf.state_dict().items():
            param.copy_(gmf.state_dict()[name])
        for name, param in self.mlp.state_dict().items():
            param.copy_(mlp.state_dict()[name])
        if self.biases is not None:
            for name, param in self.biases.state_dict().items():
                param.zero_()
                for part, share in ((gmf, alpha), (mlp, 1 - alpha)):
                    if part.biases is not None:
                        param.add_(share * part.biases.state_dict()[name])
        self.output.weight.copy_(torch.cat([alpha * gmf.output.weight,
                                            (1 - alpha) * mlp.output.weight], dim=-1))
        self.output.bias.copy_(alpha * gmf.output.bias + (1 - alpha) * mlp.output.bias)


def build(model: str, num_users: int, num_items: int, factors: int,
          layers: tuple[int, ...], dropout: float = 0.0, init_std: float = 0.01,
          biases: bool = False) -> nn.Module:
    """A fresh GMF, MLP or NeuMF with the paper's initialisation."""
    if model == "gmf":
        return GMF(num_users, num_items, factors, init_std, biases)
    if model == "mlp":
        return MLP(num_users, num_items, layers, dropout, init_std, biases)
    if model == "neumf":
        return NeuMF(num_users, num_items, factors, layers, dropout, init_std, biases)
    raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
