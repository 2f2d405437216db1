"""Checkpoints: model, optimiser, config, epoch and metrics in one file, and (since
recommendations were added) the data's raw ids and fingerprint (`data.IdMap`), so that
the model can be used on the data's own ids and never on other data by mistake.

Saved atomically (temp file, then rename), so a crash never leaves half a checkpoint.
Loaded with `torch.load(weights_only=True)`: only tensors and plain containers are
unpickled, so a checkpoint from somewhere else cannot run code.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ncf_tune import storage
from ncf_tune.config import TrainConfig
from ncf_tune.data import IdMap
from ncf_tune.errors import NcfError
from ncf_tune.files import atomic_path
from ncf_tune.models import GMF, MLP, NAMES, build, score_spread, stacked_sizes

FORMAT = "ncf_tune/1"


@dataclass(frozen=True)
class Checkpoint:
    config: TrainConfig
    epoch: int  # epochs completed (1-based: 1 after the first epoch)
    num_users: int
    num_items: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any] | None
    metrics: dict[str, float]
    ids: IdMap | None = None  # None in a checkpoint saved before ids were kept

    def model(self, device: torch.device | str = "cpu") -> nn.Module:
        """The model this checkpoint holds, weights loaded, on `device`."""
        cfg = self.config
        model = build(cfg.model, self.num_users, self.num_items, cfg.factors, cfg.layers,
                      cfg.dropout, cfg.init_std, cfg.biases, cfg.dot_product)
        model.load_state_dict(self.model_state)
        return model.to(device)


def save(path: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None,
         config: TrainConfig, epoch: int, num_users: int, num_items: int,
         metrics: dict[str, float] | None = None, ids: IdMap | None = None) -> Path:
    """Write a checkpoint to `path` atomically; returns the path.
    ids: the data's raw ids and fingerprint (`Split.ids`), which recommend needs."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "config": config.to_dict(),
        "epoch": epoch,
        "num_users": num_users,
        "num_items": num_items,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "metrics": dict(metrics or {}),
        # Plain strings and tensors: a weights_only load reads them.
        "ids": None if ids is None else {"source": ids.source, "fingerprint": ids.fingerprint,
                                         "users": ids.users.cpu(), "items": ids.items.cpu(),
                                         "split_seed": ids.split_seed},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load(path: str | os.PathLike, expect_model: str | None = None) -> Checkpoint:
    """Read a checkpoint saved by `save`, on the CPU, from a path or a storage URI.

    Raises NcfError (one line) when the file is missing, truncated, not an ncf_tune
    checkpoint, or (with `expect_model`) holds another model.
    """
    if storage.is_uri(str(path)):  # a search's hand-off on a cluster: s3://, gs://, file://
        if not storage.exists(str(path)):
            raise NcfError(f"{path}: checkpoint not found in storage; check --storage")
        source: Any = io.BytesIO(storage.read_bytes(str(path)))
    else:
        path = Path(path)
        if not path.is_file():
            raise NcfError(f"{path}: checkpoint not found; give the path of a model.pt "
                           "written by ncf_tune.train or ncf_tune.search")
        source = path
    try:
        raw = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle error, arbitrary file
        raise NcfError(f"{path}: not a readable checkpoint ({type(exc).__name__}); the file "
                       "may be truncated: retrain or copy it again") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise NcfError(f"{path}: not an ncf_tune checkpoint (no '{FORMAT}' format tag)")
    config = TrainConfig.from_dict(raw["config"], where=f"{path} (config)")
    if expect_model is not None and config.model != expect_model:
        raise NcfError(f"{path}: holds a {NAMES[config.model]} model, but a "
                       f"{NAMES[expect_model]} checkpoint is needed here")
    return Checkpoint(
        config=config,
        epoch=int(raw["epoch"]),
        num_users=int(raw["num_users"]),
        num_items=int(raw["num_items"]),
        model_state=raw["model"],
        optimizer_state=raw["optimizer"],
        metrics=dict(raw["metrics"]),
        ids=_ids(raw.get("ids"), path, int(raw["num_users"]), int(raw["num_items"])),
    )


def _ids(raw: Any, path: Any, num_users: int, num_items: int) -> IdMap | None:
    if raw is None:
        return None
    try:
        seed = raw.get("split_seed")  # absent before splits were recorded
        ids = IdMap(str(raw["source"]), str(raw["fingerprint"]), raw["users"], raw["items"],
                    None if seed is None else int(seed))
        ok = ids.users.shape == (num_users,) and ids.items.shape == (num_items,)
    except (KeyError, TypeError, AttributeError, ValueError):
        ok = False
    if not ok:
        raise NcfError(f"{path}: its id maps do not fit its {num_users} users x {num_items} "
                       "items; the file is damaged: retrain or copy it again")
    return ids


def load_pretrained(model: nn.Module, config: TrainConfig, num_users: int,
                    num_items: int, ids: IdMap | None = None) -> None:
    """Initialise `model` from the checkpoints `config.pretrain_gmf` / `pretrain_mlp`.

    Sizes must match: the pretrained models' user/item counts the data's, the GMFs'
    factors NeuMF's factors (summed, for several) or the MLP's embedding size, the MLPs'
    layers NeuMF's layers (summed layer by layer, for several). ids: the split `model`
    trains on (`Split.ids`); a part trained on other data or on another split of it is
    refused, since its training rows hold this split's validation items (`same_split`).
    """
    if not (config.pretrain_gmf or config.pretrain_mlp):
        return
    gmf_parts = [_pretrained(p, "gmf", num_users, num_items, ids) for p in config.pretrain_gmf]
    gmfs = [model for model, _ in gmf_parts]
    if config.model == "mlp":
        gmf = gmfs[0]
        assert isinstance(model, MLP) and isinstance(gmf, GMF)
        if gmf.user.embedding_dim != config.layers[0] // 2:
            raise NcfError(f"{config.pretrain_gmf[0]}: GMF has {gmf.user.embedding_dim} factors "
                           f"but the MLP embeds users in layers[0]/2 = {config.layers[0] // 2}; "
                           f"use layers starting with {2 * gmf.user.embedding_dim}")
        model.embeddings_from(gmf)
        return
    mlp_parts = [_pretrained(p, "mlp", num_users, num_items, ids) for p in config.pretrain_mlp]
    mlps = [model for model, _ in mlp_parts]
    gmf_names, mlp_names = (" + ".join(paths) for paths in (config.pretrain_gmf,
                                                             config.pretrain_mlp))
    try:
        factors, layers = stacked_sizes(gmfs, mlps)  # type: ignore[arg-type]
    except ValueError as exc:
        raise NcfError(f"{mlp_names}: {exc}; pretrain from MLPs of one depth") from None
    if factors != config.factors:
        raise NcfError(f"{gmf_names}: GMF has {factors} factors, the NeuMF config says "
                       f"factors={config.factors}; make them equal")
    if layers != tuple(config.layers):
        raise NcfError(f"{mlp_names}: MLP layers are {list(layers)}, the NeuMF config says "
                       f"layers={list(config.layers)}; make them equal")
    for path, part in zip((*config.pretrain_gmf, *config.pretrain_mlp), (*gmfs, *mlps),
                          strict=True):
        if part.biases is not None and not config.biases:  # type: ignore[union-attr]
            raise NcfError(f"{path}: the pretrained model has user/item biases and the NeuMF "
                           "config has none; set biases: true to keep them")
    # Parts all trained by log loss score in logits, on one scale: mixed as they are (the
    # paper's pretraining). A part trained by ALS scores on another (a squared loss on
    # 1 and 0); then every part is divided by its spread, so that alpha weighs
    # comparable scores whatever trained them (alpha 1 and 0 still give one side's
    # ranking exactly).
    parts = [*gmf_parts, *mlp_parts]
    scales = None
    if any(cfg.optimizer == "als" for _, cfg in parts):
        scales = [score_spread(part, num_users, num_items) for part, _ in parts]
    model.load_pretrained(gmfs, mlps, config.alpha, scales)  # type: ignore[operator]


def same_split(path: str, part: IdMap | None, here: IdMap | None) -> None:
    """Refuse (one line, naming both splits) a pretrained part whose checkpoint says it was
    trained on other data, or on the same data split with another seed: that split's
    training rows hold this one's validation items, and the part would inflate validation
    and pick winners on leaked data. A checkpoint saved before splits were recorded (no
    split seed) is checked on its data alone."""
    if part is None or here is None:
        return
    if part.fingerprint != here.fingerprint:
        raise NcfError(f"{path}: trained on other data ({part.source}, fingerprint "
                       f"{part.fingerprint}) than this run's ({here.source}, "
                       f"{here.fingerprint}); pretrain on the same data")
    if part.split_seed is not None and here.split_seed is not None \
            and part.split_seed != here.split_seed:
        raise NcfError(f"{path}: trained on the seed-{part.split_seed} split of "
                       f"{part.source}, this run uses its seed-{here.split_seed} split (whose "
                       f"validation items that model trained on); pretrain with --seed "
                       f"{here.split_seed}, or run this one with --seed {part.split_seed}")


def _pretrained(path: str, kind: str, num_users: int, num_items: int,
                ids: IdMap | None = None) -> tuple[nn.Module, TrainConfig]:
    ckpt = load(str(path), expect_model=kind)
    if (ckpt.num_users, ckpt.num_items) != (num_users, num_items):
        raise NcfError(f"{path}: trained on {ckpt.num_users} users x {ckpt.num_items} items, "
                       f"the data has {num_users} x {num_items}; pretrain on the same data")
    same_split(path, ckpt.ids, ids)
    try:
        return ckpt.model(), ckpt.config
    except RuntimeError as exc:
        raise NcfError(f"{path}: weights do not fit its own config "
                       f"({str(exc).splitlines()[0]})") from None
