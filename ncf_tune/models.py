"""GMF, MLP and NeuMF (He et al., WWW 2017). Every model maps (users, items) to logits.

    GMF    logit = h . (p_u * q_i)                       p, q: `factors`-dim embeddings
           (with `dot_product`, h is fixed to ones: logit = p_u . q_i, plain MF)
    MLP    logit = h . tower([p_u ; q_i])                p, q: layers[0] / 2 each
    NeuMF  logit = h . [p_u * q_i ; tower([p'_u ; q'_i])] separate embeddings per branch

With `biases`, each model adds b_u + b_i to its logit (Rendle et al. 2020's MF has them).

`item_scorer()` gives a function from users to every item's logit for each of them
([users x items], for recommendations and full-ranking evaluation): the same numbers as
`forward` on every pair, but the embedding side is one matrix product, not a lookup per
pair, and the items' share of a tower's first layer is computed once, not per chunk of
users (it was half the time of NeuMF-64's full ranking). `item_scores(users)` is one call.
`scorer()` does the same for given (user, item) pairs (the sampled evaluation's 100
candidates per user), and `distinct_logits_and_norms` for a training batch given as its
distinct users and items (fused steps, steps.py).

Logits, not probabilities: the loss is BCEWithLogitsLoss, which is stable where a
sigmoid followed by BCELoss (the notebook) saturates.

NeuMF works best started from a trained GMF and a trained MLP (paper, section 3.4.1):
`NeuMF.load_pretrained` copies their embeddings and tower and mixes their output layers
as [alpha * h_GMF ; (1 - alpha) * h_MLP]. It also takes several of each (a search's best
few), side by side: an ensemble that is still one NeuMF. A part trained by ALS (a squared
loss, not log loss) scores on another scale; then each part is divided by its spread
first (`score_spread`, checkpoint.load_pretrained), so alpha weighs comparable scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

MODELS = ("gmf", "mlp", "neumf")
Scorer = Callable[[torch.Tensor], torch.Tensor]  # users -> [len(users), num_items] logits
NAMES = {"gmf": "GMF", "mlp": "MLP", "neumf": "NeuMF"}  # as the paper writes them, for messages


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

    def forward(self, users: torch.Tensor, items: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: b_u + b_i, and b_u^2 + b_i^2 (their share of the embedding L2)."""
        bu, bi = self.user(users).squeeze(-1), self.item(items).squeeze(-1)
        return bu + bi, bu.square() + bi.square()


def _biases(num_users: int, num_items: int, on: bool) -> Biases | None:
    return Biases(num_users, num_items) if on else None


def _plus_bias_matrix(logits: torch.Tensor, biases: Biases | None,
                      users: torch.Tensor) -> torch.Tensor:
    """[users x items] logits + b_u + b_i (the matrix form of `_plus_biases`)."""
    if biases is None:
        return logits
    return logits + biases.user(users) + biases.item.weight.T


def _plus_biases(logits: torch.Tensor, norms: torch.Tensor, biases: Biases | None,
                 users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if biases is None:
        return logits, norms
    offset, bias_norms = biases(users, items)
    return logits + offset, norms + bias_norms


def _with_biases(logits: torch.Tensor, biases: Biases | None, users: torch.Tensor,
                 items: torch.Tensor) -> torch.Tensor:
    if biases is None:
        return logits
    return logits + biases(users, items)[0]


PairScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (users, items) -> logits


def _first_layer_tables(p: torch.Tensor, q: torch.Tensor, tower: Tower
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The tower's first layer split by its input, W [p; q] + b = (W_p p) + (W_q q + b),
    each half applied to rows of user (item) embeddings: `p`'s and `q`'s."""
    first, e = tower.linears[0], p.shape[-1]
    return p @ first.weight[:, :e].T, torch.addmm(first.bias, q, first.weight[:, e:].T)


def _tower_from_tables(tables: tuple[torch.Tensor, torch.Tensor], tower: Tower,
                       users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """The tower's output for rows (users[k], items[k]), indices into the tables."""
    return tower.from_first(tables[0].index_select(0, users)
                            + tables[1].index_select(0, items))


def _distinct_logits_and_norms(logits: torch.Tensor, p: torch.Tensor, q: torch.Tensor,
                               biases: Biases | None, users: torch.Tensor,
                               user_of: torch.Tensor, items: torch.Tensor,
                               item_of: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`_plus_biases` for a batch given as distinct ids and each row's index into them;
    `p`, `q`: the distinct rows' embeddings, for the norms."""
    norms = _sq(p).index_select(0, user_of) + _sq(q).index_select(0, item_of)
    if biases is None:
        return logits, norms
    bu, bi = biases.user(users).squeeze(-1), biases.item(items).squeeze(-1)
    bu, bi = bu.index_select(0, user_of), bi.index_select(0, item_of)
    return logits + (bu + bi), norms + (bu.square() + bi.square())


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
        return self.from_first(self.linears[0](x))

    def _activate(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return F.dropout(x, self.dropout, self.training) if self.dropout > 0 else x

    def project(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """x's share of the first layer's output (bias not added), where x fills the
        input's columns start..start + x.shape[-1]: the first layer is linear, so the
        user and item halves of [p ; q] can go through it apart, each once."""
        return x @ self.linears[0].weight[:, start:start + x.shape[-1]].T

    def pairs(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """forward([l_i ; r_j]) for every i and j, from the two halves' `project`ions:
        [len(left), len(right), out]; only the layers after the first run per pair."""
        return self.from_first((left + self.linears[0].bias)[:, None] + right[None])

    def from_first(self, h: torch.Tensor) -> torch.Tensor:
        """The tower's output from its first layer's output `h` (before the ReLU)."""
        x = self._activate(h)
        for linear in self.linears[1:]:
            x = self._activate(linear(x))
        return x


class GMF(nn.Module):
    def __init__(self, num_users: int, num_items: int, factors: int = 8,
                 init_std: float = 0.01, biases: bool = False,
                 dot_product: bool = False) -> None:
        super().__init__()
        self.user = _embedding(num_users, factors, init_std)
        self.item = _embedding(num_items, factors, init_std)
        self.output = _output(factors)
        if dot_product:
            # The paper's MF special case (section 3.2). h stays a (frozen) parameter so
            # the state dict is a GMF's and a NeuMF takes it as it takes any GMF. Why it
            # matters: with plain SGD a learned h scales each factor's step by |h_k|
            # (LeCun init: about 0.1), and Rendle et al.'s SGD recipe assumes h = 1.
            nn.init.ones_(self.output.weight)
            self.output.weight.requires_grad_(False)
        self.biases = _biases(num_users, num_items, biases)

    def features(self, users: torch.Tensor, items: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: p_u * q_i, and the squared norms of p_u and q_i (for embedding L2)."""
        p, q = self.user(users), self.item(items)
        return p * q, _sq(p) + _sq(q)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.logits_and_norms(users, items)[0]

    def logits_and_norms(self, users: torch.Tensor, items: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits, and per row the squared L2 norm of the embeddings (and biases) used.
        One lookup serves both: the L2 term does not look the rows up again."""
        x, norms = self.features(users, items)
        return _plus_biases(self.output(x).squeeze(-1), norms, self.biases, users, items)

    def item_scorer(self) -> Scorer:
        """users -> every item's logit for each: [len(users), num_items]."""
        def scores(users: torch.Tensor) -> torch.Tensor:
            p = self.user(users) * self.output.weight[0]  # h folded into the user side
            return _plus_bias_matrix(p @ self.item.weight.T + self.output.bias, self.biases,
                                     users)

        return scores

    def item_scores(self, users: torch.Tensor) -> torch.Tensor:
        """Every item's logit for each of `users`: [len(users), num_items]."""
        return self.item_scorer()(users)

    def scorer(self) -> PairScorer:
        """Logits of (users, items) pairs as `forward` gives them, without the norms
        (see `NeuMF.scorer`)."""
        def score(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
            logits = self.output(self.user(users) * self.item(items)).squeeze(-1)
            return _with_biases(logits, self.biases, users, items)
        return score


class MLP(nn.Module):
    def __init__(self, num_users: int, num_items: int, layers: tuple[int, ...] = (64, 32, 16, 8),
                 dropout: float = 0.0, init_std: float = 0.01, biases: bool = False) -> None:
        super().__init__()
        self.user = _embedding(num_users, layers[0] // 2, init_std)
        self.item = _embedding(num_items, layers[0] // 2, init_std)
        self.tower = Tower(tuple(layers), dropout)
        self.output = _output(layers[-1])
        self.biases = _biases(num_users, num_items, biases)

    def features(self, users: torch.Tensor, items: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per row: the tower's output, and the squared norms of the embeddings it took."""
        p, q = self.user(users), self.item(items)
        return self.tower(torch.cat([p, q], dim=-1)), _sq(p) + _sq(q)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.logits_and_norms(users, items)[0]

    def logits_and_norms(self, users: torch.Tensor, items: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        x, norms = self.features(users, items)
        return _plus_biases(self.output(x).squeeze(-1), norms, self.biases, users, items)

    def item_scorer(self) -> Scorer:
        """users -> every item's logit for each: [len(users), num_items]."""
        items = self.tower.project(self.item.weight, self.user.embedding_dim)  # once

        def scores(users: torch.Tensor) -> torch.Tensor:
            x = self.tower.pairs(self.tower.project(self.user(users), 0), items)
            return _plus_bias_matrix(self.output(x).squeeze(-1), self.biases, users)

        return scores

    def item_scores(self, users: torch.Tensor) -> torch.Tensor:
        """Every item's logit for each of `users`: [len(users), num_items]."""
        return self.item_scorer()(users)

    def scorer(self) -> PairScorer:
        """Logits of (users, items) pairs as `forward` gives them in evaluation mode, up
        to float rounding, with the tower's first layer applied once per user and item
        (see `NeuMF.scorer`). Valid while the weights stay as they are."""
        tables = _first_layer_tables(self.user.weight, self.item.weight, self.tower)

        def score(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
            x = _tower_from_tables(tables, self.tower, users, items)
            return _with_biases(self.output(x).squeeze(-1), self.biases, users, items)
        return score

    def distinct_logits_and_norms(self, users: torch.Tensor, user_of: torch.Tensor,
                                  items: torch.Tensor, item_of: torch.Tensor
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """`logits_and_norms(users[user_of], items[item_of])` up to float rounding, for a
        batch given as its distinct users and items and each row's index into them (see
        `NeuMF.distinct_logits_and_norms`)."""
        p, q = self.user(users), self.item(items)
        x = _tower_from_tables(_first_layer_tables(p, q, self.tower), self.tower, user_of,
                               item_of)
        return _distinct_logits_and_norms(self.output(x).squeeze(-1), p, q, self.biases,
                                          users, user_of, items, item_of)

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
        return self.logits_and_norms(users, items)[0]

    def logits_and_norms(self, users: torch.Tensor, items: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        g, g_norms = self.gmf.features(users, items)
        m, m_norms = self.mlp.features(users, items)
        logits = self.output(torch.cat([g, m], -1)).squeeze(-1)
        return _plus_biases(logits, g_norms + m_norms, self.biases, users, items)

    def item_scorer(self) -> Scorer:
        """users -> every item's logit for each: [len(users), num_items]. The output
        layer splits into the GMF half's h (a matrix product, as GMF's) and the MLP's."""
        h = self.output.weight[0]
        f = self.gmf.user.embedding_dim
        tower = self.mlp.tower
        items = tower.project(self.mlp.item.weight, self.mlp.user.embedding_dim)  # once

        def scores(users: torch.Tensor) -> torch.Tensor:
            gmf = (self.gmf.user(users) * h[:f]) @ self.gmf.item.weight.T
            mlp = tower.pairs(tower.project(self.mlp.user(users), 0), items) @ h[f:]
            return _plus_bias_matrix(gmf + mlp + self.output.bias, self.biases, users)

        return scores

    def item_scores(self, users: torch.Tensor) -> torch.Tensor:
        """Every item's logit for each of `users`: [len(users), num_items]."""
        return self.item_scorer()(users)

    def scorer(self) -> PairScorer:
        """Logits of (users, items) pairs as `forward` gives them in evaluation mode, up
        to float rounding, for scoring many pairs with fixed weights (evaluation: 100
        candidates per user). The tower's first layer, the widest, is applied once to
        every user's and every item's embedding instead of once per pair: W [p; q] + b
        = (W_p p) + (W_q q + b). Per pair that leaves a gather and an add where there was
        a layers[0] x layers[1] product (NeuMF 256-256-128-64: 62 % of the multiply-adds
        of scoring a pair; MLP 512-256-128: 80 %). Valid while the weights stay as
        they are."""
        tables = _first_layer_tables(self.mlp.user.weight, self.mlp.item.weight,
                                     self.mlp.tower)

        def score(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
            g = self.gmf.user(users) * self.gmf.item(items)
            m = _tower_from_tables(tables, self.mlp.tower, users, items)
            logits = self.output(torch.cat([g, m], -1)).squeeze(-1)
            return _with_biases(logits, self.biases, users, items)
        return score

    def distinct_logits_and_norms(self, users: torch.Tensor, user_of: torch.Tensor,
                                  items: torch.Tensor, item_of: torch.Tensor
                                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """`logits_and_norms(users[user_of], items[item_of])` up to float rounding, for a
        batch given as its distinct users and items and each row's index into them. As
        in `scorer`, the tower's first layer is applied per user and per item, here the
        batch's distinct ones: a batch of 4096 rows on ML-1M has about 2,300 users and
        2,500 items, so its widest layer costs 60 % of the multiply-adds, forward and
        backward."""
        p, q = self.mlp.user(users), self.mlp.item(items)
        pg, qg = self.gmf.user(users), self.gmf.item(items)
        g = pg.index_select(0, user_of) * qg.index_select(0, item_of)
        m = _tower_from_tables(_first_layer_tables(p, q, self.mlp.tower), self.mlp.tower,
                               user_of, item_of)
        logits = self.output(torch.cat([g, m], -1)).squeeze(-1)
        return _distinct_logits_and_norms(logits, torch.cat([pg, p], -1),
                                          torch.cat([qg, q], -1), self.biases, users,
                                          user_of, items, item_of)

    @torch.no_grad()
    def load_pretrained(self, gmfs: GMF | Sequence[GMF], mlps: MLP | Sequence[MLP],
                        alpha: float = 0.5, scales: Sequence[float] | None = None) -> None:
        """Copy trained GMFs and MLPs in; NeuMF then computes, in logits,
        alpha * mean(GMF logits) + (1 - alpha) * mean(MLP logits), exactly.

        scales: one per part (GMFs first, then MLPs): each part's logits are divided by
        its scale before they are mixed (default: 1 each, the raw logits). Parts trained
        by other losses score on other scales (ALS pulls scores towards 1 and 0, log loss
        towards +-inf); divided by their spread (`score_spread`), alpha weighs
        comparable scores.

        One GMF and one MLP is the paper's pretraining: output = [alpha * h_GMF ;
        (1 - alpha) * h_MLP]. Several (a search's best few of each) are laid side by side:
        the GMF half's factors are theirs concatenated (p * q is elementwise, so each
        keeps its own), the tower is theirs block-diagonal (the same depth each), and
        each part's h gets its share of alpha. An average of a few good models often
        ranks better than the best one alone (docs/RESULTS.md), and training the whole
        NeuMF from here may use the blocks' zeros. The parts' layer sizes must add up to
        this NeuMF's (see `stacked_sizes`). Unlike the notebook, the tower's biases are
        copied too; so are the user and item biases, mixed the same way, when NeuMF has
        them (a missing one counts as 0).
        """
        gmfs = [gmfs] if isinstance(gmfs, GMF) else list(gmfs)
        mlps = [mlps] if isinstance(mlps, MLP) else list(mlps)
        # Both halves: the parts' embeddings side by side.
        for half, parts in ((self.gmf, gmfs), (self.mlp, mlps)):
            for name in ("user", "item"):
                getattr(half, name).weight.copy_(
                    torch.cat([getattr(p, name).weight for p in parts], dim=-1))
        # MLP half: each tower a block of the big one. The big tower's input is
        # [p_1 .. p_k ; q_1 .. q_k]; block i reads its own p_i and q_i.
        emb = [m.user.embedding_dim for m in mlps]
        row, col = 0, 0
        first = self.mlp.tower.linears[0]
        first.weight.zero_()
        for m, e in zip(mlps, emb, strict=True):
            w, b = m.tower.linears[0].weight, m.tower.linears[0].bias
            rows = slice(row, row + w.shape[0])
            first.weight[rows, col:col + e] = w[:, :e]  # p_i
            first.weight[rows, sum(emb) + col:sum(emb) + col + e] = w[:, e:]  # q_i
            first.bias[rows] = b
            row, col = row + w.shape[0], col + e
        for j, big in enumerate(self.mlp.tower.linears[1:], start=1):
            big.weight.copy_(torch.block_diag(*[m.tower.linears[j].weight for m in mlps]))
            big.bias.copy_(torch.cat([m.tower.linears[j].bias for m in mlps]))
        # Output: each part's h scaled by its share; biases mixed by the same shares.
        parts = [*gmfs, *mlps]
        scales = [1.0] * len(parts) if scales is None else list(scales)
        if len(scales) != len(parts) or not all(s > 0 for s in scales):
            raise ValueError(f"one positive scale per part: {scales}")
        weights = [alpha / len(gmfs)] * len(gmfs) + [(1 - alpha) / len(mlps)] * len(mlps)
        shares = [(p, w / s) for p, w, s in zip(parts, weights, scales, strict=True)]
        self.output.weight.copy_(torch.cat([s * p.output.weight for p, s in shares], dim=-1))
        self.output.bias.copy_(sum(s * p.output.bias for p, s in shares))
        if self.biases is not None:
            for name, param in self.biases.state_dict().items():
                param.zero_()
                for part, share in shares:
                    if part.biases is not None:
                        param.add_(share * part.biases.state_dict()[name])


@torch.no_grad()
def score_spread(model: nn.Module, num_users: int, num_items: int, pairs: int = 1 << 14
                 ) -> float:
    """The standard deviation of `model`'s logits over `pairs` (user, item) pairs drawn
    uniformly with a fixed seed (the same pairs for every model of these sizes): the
    scale `NeuMF.load_pretrained` divides a part by. Dividing a part's logits by it
    leaves the part's own ranking as it was."""
    gen = torch.Generator().manual_seed(0)
    users = torch.randint(num_users, (pairs,), generator=gen)
    items = torch.randint(num_items, (pairs,), generator=gen)
    was_training = model.training
    model.eval()
    spread = model(users, items).std().item()
    model.train(was_training)
    return spread if spread > 0 else 1.0  # a constant scorer: nothing to rescale


def stacked_sizes(gmfs: Sequence[GMF], mlps: Sequence[MLP]) -> tuple[int, tuple[int, ...]]:
    """(factors, layers) of the NeuMF that `NeuMF.load_pretrained` builds from these
    parts: factors add up, and so does each tower layer (towers must be equally deep)."""
    towers = [(2 * m.user.embedding_dim, *(lin.out_features for lin in m.tower.linears))
              for m in mlps]
    if len({len(t) for t in towers}) > 1:
        raise ValueError(f"MLP towers of different depths cannot be stacked: {towers}")
    return (sum(g.user.embedding_dim for g in gmfs),
            tuple(sum(sizes) for sizes in zip(*towers, strict=True)))


def pair_width(model: nn.Module) -> int:
    """Floats an `item_scorer` holds per (user, item) pair at its widest: a tower's first
    layer, else 1. Callers size their chunks of users by it."""
    tower = model.mlp.tower if isinstance(model, NeuMF) else getattr(model, "tower", None)
    return tower.linears[0].out_features if isinstance(tower, Tower) else 1


def build(model: str, num_users: int, num_items: int, factors: int,
          layers: tuple[int, ...], dropout: float = 0.0, init_std: float = 0.01,
          biases: bool = False, dot_product: bool = False) -> nn.Module:
    """A fresh GMF, MLP or NeuMF with the paper's initialisation (`dot_product`: GMF only)."""
    if model == "gmf":
        return GMF(num_users, num_items, factors, init_std, biases, dot_product)
    if model == "mlp":
        return MLP(num_users, num_items, layers, dropout, init_std, biases)
    if model == "neumf":
        return NeuMF(num_users, num_items, factors, layers, dropout, init_std, biases)
    raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
