"""Reproduce docs/RESULTS.md: train the winning configs for several seeds, score the
NCF paper's test split once per run, print the table beside the paper's.

    python benchmarks/paper_table.py --data ../shared/data/ml-1m --factors 64 --seeds 0 1 2
    python benchmarks/paper_table.py --data ../shared/data/ml-1m --models gmf --factors 8 16
    python benchmarks/paper_table.py --table runs.jsonl     # the table of runs done before
    python benchmarks/paper_table.py --data ../shared/data/ml-1m --factors 64 \
        --mlp-scale 2 --models neumf-pre                     # NeuMF from GMF-64 + MLP-128

No search runs here. For every factor size f and seed, in this order:
  gmf        GMF with f factors                      configs/gmf.yaml
  mlp        MLP, layers 4m,2m,m (paper, section 4)  configs/mlp.yaml
  neumf      NeuMF from scratch                      configs/neumf.yaml
  neumf-pre  NeuMF from this seed's GMF and MLP      configs/neumf-pre.yaml
m is f (the paper's sizes) unless --mlp-scale S makes it S*f: a wider MLP beside GMF-f;
the table then shows "f + m" for the NeuMF rows, which are not the paper's models.
The YAML files (default benchmarks/paper_configs/, the recipes of docs/RESULTS.md's
table, or a search's winners copied there) hold every other setting; the sizes come from
--factors, and a file's `by_factors: {8: {embedding_l2: 0.005}}` changes settings at one
size. A seed fixes the validation hold-out, the initialisation, the negatives and
the batch order.

Each run keeps the weights of its best validation epoch (NDCG@10, as the search ranks
trials) and scores the test set with them, once. `neumf-pre` starts from those same
best-epoch GMF and MLP weights, and its epoch 0 (the untrained mix) is a candidate too.
`--keep DIR` keeps the GMFs and MLPs with their figures and reuses them when the
config, seed and data match: `--models gmf` first and `--models neumf-pre` later train
each part once. With `--stop-after MINUTES` the table stops after the epoch that ends past
that time and keeps the part in training, to be continued by the same command later,
here or on another machine (a GPU machine available for minutes, say). `alpha` in
neumf-pre.yaml may be a list: each value's untrained mix is scored on validation and the
best one is fine-tuned. Test scores never choose anything.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ncf_tune import checkpoint, data, training
from ncf_tune.config import TrainConfig
from ncf_tune.errors import NcfError
from ncf_tune.files import read_yaml_mapping

ROWS = ("gmf", "mlp", "neumf", "neumf-pre")
HERE = Path(__file__).resolve().parent

# He et al. 2017, table 2 (ML-1M, HR@10 / NDCG@10). The paper's other cells (16 and 32
# factors, GMF and MLP from its figures) are not copied here: they were not checked
# against the paper.
PAPER = {
    ("neumf", 8): (0.688, 0.410),
    ("neumf-pre", 8): (0.684, 0.403),
    ("neumf-pre", 64): (0.730, 0.447),
}


@dataclass
class Run:
    row: str
    factors: int
    seed: int
    epoch: int  # the best validation epoch, whose weights were tested
    val_hr: float
    val_ndcg: float
    test_hr: float
    test_ndcg: float
    seconds: float
    mlp_factors: int = 0  # NeuMF rows: the MLP's last layer when it is not `factors`
    alpha: float | None = None  # neumf-pre: the GMF weight it ran with


def row_config(configs: Path, row: str, factors: int, seed: int,
               mlp_scale: int = 1) -> tuple[TrainConfig, list[float]]:
    """The row's config at these sizes, and the alphas to choose from (neumf-pre)."""
    path = configs / f"{row}.yaml"
    values = read_yaml_mapping(path)
    values.pop("data", None)  # a search's best_config.yaml names its data; --data decides
    values.pop("threads", None)  # and its trial's threads; the table runs on what it has
    values.update(size_overrides(path, values.pop("by_factors", None), factors))
    # a GMF's config must not depend on --mlp-scale (it has no tower): then one kept GMF
    # serves NeuMF with either MLP
    m = factors if row == "gmf" else mlp_scale * factors
    values.update(factors=m if row == "mlp" else factors, layers=[4 * m, 2 * m, m], seed=seed)
    values["model"] = "neumf" if row.startswith("neumf") else row
    alphas = values.get("alpha")
    if not isinstance(alphas, list):
        return TrainConfig.from_dict(values, where=str(path)), []
    if not alphas:  # candidates: validation chooses (see choose_alpha)
        raise NcfError(f"{path}: alpha is an empty list; give a number or a list of numbers")
    # each candidate is checked as a config of its own: a bad one is named by the file
    cfgs = [TrainConfig.from_dict({**values, "alpha": a}, where=str(path)) for a in alphas]
    cfg, alphas = cfgs[0], [c.alpha for c in cfgs]
    return cfg, alphas


def size_overrides(path: Path, by_factors: Any, factors: int) -> dict[str, Any]:
    """The settings `by_factors` gives for this --factors size ({} if none). A recipe
    tuned at 64 factors need not suit 8: `by_factors: {8: {embedding_l2: 0.005}}`
    changes only what it names, only at that size."""
    if by_factors is None:
        return {}
    if not isinstance(by_factors, dict) or not all(
            isinstance(k, int) and isinstance(v, dict) for k, v in by_factors.items()):
        raise NcfError(f"{path}: by_factors must map factor sizes to settings, e.g. "
                       "by_factors: {8: {embedding_l2: 0.005}}")
    return by_factors.get(factors, {})


def choose_alpha(cfg: TrainConfig, alphas: list[float], split: data.Split, device) -> float:
    """The alpha whose untrained mix of the pretrained parts scores best on validation."""
    scores = {}
    for a in alphas:
        mix = training.fit(cfg.replace(alpha=a, epochs=0), split, device).history[0]
        scores[a] = mix.ndcg
        print(f"  neumf-pre-{cfg.factors} seed {cfg.seed} alpha {a}: untrained mix val HR "
              f"{mix.hr:.4f}  NDCG {mix.ndcg:.4f}", file=sys.stderr, flush=True)
    return max(alphas, key=lambda a: scores[a])


class Stopped(Exception):
    """A part was cut short by --stop-after; it is kept to continue from."""


def train_best(row: str, cfg: TrainConfig, split: data.Split, device,
               save_to: Path | None, stop_at: float | None = None) -> Run:
    """Train `cfg`; test the best validation epoch's weights. Optionally save them.

    stop_at (a time.time(), with save_to): after the first epoch that ends past it, keep
    the run so far beside save_to (see Partial) and raise Stopped; a later call with the
    same save_to continues it from there, as if it had never stopped."""
    best: dict = {}
    label = f"{row}-{cfg.factors} seed {cfg.seed}"
    started = time.perf_counter()
    partial = Partial(save_to) if save_to is not None else None
    resume, spent = None, 0.0
    if partial is not None and partial.last.is_file():
        resume, best, spent = partial.load(cfg)
        print(f"  {label}: continuing after epoch {resume.epoch} from {partial.last}",
              file=sys.stderr, flush=True)

    def on_epoch(res: training.EpochResult, state: training.TrainState) -> None:
        print(f"  {label} epoch {res.epoch:3d}  loss {res.loss:.4f}  val HR {res.hr:.4f}  "
              f"NDCG {res.ndcg:.4f}  {res.seconds:.1f}s", file=sys.stderr, flush=True)
        if res.ndcg > best.get("ndcg", -1.0):
            best.update(ndcg=res.ndcg, hr=res.hr, epoch=res.epoch,
                        state=copy.deepcopy(state.model.state_dict()))
        if (stop_at is not None and partial is not None and time.time() >= stop_at
                and res.epoch < cfg.epochs and not res.diverged):
            partial.save(state, best, spent + time.perf_counter() - started)
            raise Stopped(f"{label} cut short at epoch {res.epoch} of {cfg.epochs}")

    result = training.fit(cfg, split, device, on_epoch=on_epoch, resume=resume)
    seconds = spent + time.perf_counter() - started
    if not best:
        raise SystemExit(f"{label}: diverged in its first epoch; lower lr in its config")
    result.model.load_state_dict(best["state"])
    test_hr, test_ndcg = training.evaluate(result.model, training.to_device(split.test, device))
    mlp_factors = cfg.layers[-1] if cfg.model == "neumf" else 0
    run = Run(row, cfg.factors, cfg.seed, best["epoch"], best["hr"], best["ndcg"], test_hr,
              test_ndcg, round(seconds, 1),
              mlp_factors=0 if mlp_factors == cfg.factors else mlp_factors,
              alpha=cfg.alpha if cfg.starts_pretrained else None)
    if save_to is not None:  # the run's figures go with the weights: see reuse()
        checkpoint.save(save_to, result.model, None, cfg, best["epoch"], split.num_users,
                        split.num_items, {k: float(getattr(run, k)) for k in KEPT})
    if partial is not None:
        partial.remove()
    return run


class Partial:
    """A part cut short by --stop-after, beside where the finished part will be kept:
    NAME.partial.pt holds the last epoch's weights and optimiser state (to continue from:
    an epoch's negatives and batch order depend only on the seed and the epoch number),
    NAME.partial-best.pt the best validation epoch's weights so far."""

    def __init__(self, final: Path) -> None:
        stem = final.name.removesuffix(".pt")
        self.last = final.with_name(stem + ".partial.pt")
        self.best = final.with_name(stem + ".partial-best.pt")

    def save(self, state: training.TrainState, best: dict, seconds: float) -> None:
        model = copy.deepcopy(state.model).cpu()
        model.load_state_dict(best["state"])
        # the best weights first: a partial.pt never points at a missing partial-best.pt
        checkpoint.save(self.best, model, None, state.config, best["epoch"], state.num_users,
                        state.num_items)
        state.save(str(self.last), {"best_epoch": float(best["epoch"]), "best_val_hr": best["hr"],
                                    "best_val_ndcg": best["ndcg"], "seconds": seconds})

    def load(self, cfg: TrainConfig) -> tuple[checkpoint.Checkpoint, dict, float]:
        """The checkpoint to resume, the best epoch so far (as train_best's `best`), and
        the seconds already spent. One of another config is an error, as in reuse()."""
        last = checkpoint.load(self.last, expect_model=cfg.model)
        if last.config != cfg:
            raise NcfError(f"{self.last}: cut short with another config (differs in "
                           f"{', '.join(_differing(last.config, cfg))}); remove it and "
                           f"{self.best.name}, or pass another --keep folder")
        m = last.metrics
        best = dict(ndcg=m["best_val_ndcg"], hr=m["best_val_hr"], epoch=int(m["best_epoch"]),
                    state=checkpoint.load(self.best, expect_model=cfg.model).model_state)
        return last, best, m["seconds"]

    def remove(self) -> None:
        self.last.unlink(missing_ok=True)
        self.best.unlink(missing_ok=True)


def _differing(old: TrainConfig, new: TrainConfig) -> list[str]:
    a, b = old.to_dict(), new.to_dict()
    return [k for k in b if a.get(k) != b[k]]


KEPT = ("epoch", "val_hr", "val_ndcg", "test_hr", "test_ndcg", "seconds")


def reuse(path: Path, row: str, cfg: TrainConfig) -> Run | None:
    """The run a `--keep` checkpoint holds, if it was trained with `cfg`; None when there
    is none. (Its name holds the split's fingerprint: other data never finds it.) One of
    another config is an error naming the keys that differ, never silently overwritten."""
    if not path.is_file():
        return None
    ckpt = checkpoint.load(path, expect_model=cfg.model)
    if ckpt.config != cfg:
        keys = _differing(ckpt.config, cfg)
        raise NcfError(f"{path}: kept from another config (differs in {', '.join(keys)}); "
                       "remove it or pass another --keep folder")
    if any(k not in ckpt.metrics for k in KEPT):
        raise NcfError(f"{path}: no run figures in it (not written by paper_table --keep); "
                       "remove it")
    m = ckpt.metrics
    print(f"  {row}-{cfg.factors} seed {cfg.seed}: reusing {path}", file=sys.stderr, flush=True)
    return Run(row, cfg.factors, cfg.seed, int(m["epoch"]), m["val_hr"], m["val_ndcg"],
               m["test_hr"], m["test_ndcg"], m["seconds"])


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def table(runs: list[Run]) -> str:
    lines = ["| model | factors | seeds | test HR@10 | test NDCG@10 | paper HR / NDCG | "
             "best epoch | minutes per seed |",
             "|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r.row, r.factors, r.mlp_factors) for r in runs},
                  key=lambda k: (k[1], k[2], ROWS.index(k[0])))
    for row, f, m in keys:
        rs = [r for r in runs if (r.row, r.factors, r.mlp_factors) == (row, f, m)]
        paper = None if m else PAPER.get((row, f))  # a wider MLP is not the paper's model
        paper_text = f"{paper[0]:.3f} / {paper[1]:.3f}" if paper else "-"
        epochs = ",".join(str(r.epoch) for r in rs)
        minutes = statistics.mean(r.seconds for r in rs) / 60
        size = f"{f} + {m}" if m else str(f)
        lines.append(f"| {row} | {size} | {len(rs)} | {mean_std([r.test_hr for r in rs])} | "
                     f"{mean_std([r.test_ndcg for r in rs])} | {paper_text} | {epochs} | "
                     f"{minutes:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("NCF_TUNE_PAPER_SPLIT"),
                    help="the paper split folder (or set NCF_TUNE_PAPER_SPLIT)")
    ap.add_argument("--configs", type=Path, default=HERE / "paper_configs",
                    help="folder with gmf.yaml, mlp.yaml, neumf.yaml, neumf-pre.yaml")
    ap.add_argument("--factors", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--mlp-scale", type=int, default=1, metavar="S",
                    help="MLP layers 4m,2m,m with m = S x factors (default 1: the paper's)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--models", nargs="+", choices=ROWS, default=list(ROWS))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--jsonl", type=Path, help="append one line per finished run here (several "
                    "processes may share one file: runs can be spread over machines)")
    ap.add_argument("--keep", type=Path, metavar="DIR",
                    help="keep each GMF and MLP (weights and figures) here, and reuse one "
                    "kept with the same config and seed instead of training it again: "
                    "NeuMF variants and interrupted tables need not retrain their parts "
                    "(a reused run is not appended to --jsonl again)")
    ap.add_argument("--stop-after", type=float, metavar="MINUTES",
                    help="(with --keep) stop after the first epoch that ends this long after "
                    "the start, keeping the GMF or MLP in training to continue from: run "
                    "again with the same --keep, on this machine or another, to go on "
                    "(exit status 3 when stopped; 0 stops after one epoch)")
    ap.add_argument("--table", type=Path, nargs="+", metavar="JSONL",
                    help="print the table of the runs in these files; train nothing")
    args = ap.parse_args()
    if args.table:
        runs = [Run(**json.loads(line)) for path in args.table
                for line in path.read_text().splitlines() if line.strip()]
        print(table(runs))
        return
    if not args.data:
        ap.error("--data DIR is required (the NCF paper's ML-1M split folder)")
    if args.mlp_scale < 1:
        ap.error("--mlp-scale must be at least 1")
    if args.stop_after is not None and (args.keep is None or args.stop_after < 0):
        ap.error("--stop-after needs --keep DIR (where the part cut short is kept) and "
                 "MINUTES >= 0")
    device = training.choose_device(args.device)
    rows = [r for r in ROWS if r in args.models]
    if "neumf-pre" in rows:  # needs this seed's GMF and MLP
        rows = list(dict.fromkeys(["gmf", "mlp", *rows]))
    runs: list[Run] = []
    started = time.perf_counter()
    stop_at = None if args.stop_after is None else time.time() + 60 * args.stop_after
    trained = False  # each call trains at least one epoch before --stop-after stops it
    with tempfile.TemporaryDirectory(prefix="paper_table_") as tmp:
        parts = args.keep or Path(tmp)
        parts.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            split = data.prepare(args.data, seed=seed)
            for f in args.factors:
                saved: dict[str, Path] = {}
                biased = False  # NeuMF takes user/item biases when a part has them
                for row in rows:
                    if stop_at is not None and trained and time.time() >= stop_at:
                        raise Stopped(f"out of time before {row}-{f} seed {seed}")
                    cfg, alphas = row_config(args.configs, row, f, seed, args.mlp_scale)
                    if row == "neumf-pre":
                        cfg = cfg.replace(pretrain_gmf=str(saved["gmf"]),
                                          pretrain_mlp=str(saved["mlp"]),
                                          biases=cfg.biases or biased)
                        if alphas:
                            cfg = cfg.replace(alpha=choose_alpha(cfg, alphas, split, device))
                    elif row in ("gmf", "mlp"):
                        biased = biased or cfg.biases
                    # the split's fingerprint in the name: other data never matches
                    name = f"{row}-{cfg.factors}-seed{seed}-{split.fingerprint[:8]}.pt"
                    save_to = parts / name if row in ("gmf", "mlp") else None
                    reused = save_to and reuse(save_to, row, cfg)
                    run = reused or train_best(row, cfg, split, device, save_to, stop_at)
                    trained = trained or not reused
                    if save_to is not None:
                        saved[row] = save_to
                    runs.append(run)
                    line = json.dumps(run.__dict__)
                    print(line, flush=True)
                    if args.jsonl and row in args.models and not reused:  # once per run
                        with open(args.jsonl, "a") as out:  # one short line: an atomic append
                            out.write(line + "\n")
    kept = [r for r in runs if r.row in args.models]
    print(f"\n{table(kept)}\n\ntotal {(time.perf_counter() - started) / 60:.1f} min on "
          f"{device}", flush=True)


if __name__ == "__main__":
    try:
        main()
    except Stopped as exc:  # --stop-after: what is done is kept; the next call goes on
        print(f"stopped (--stop-after): {exc}; run the same command again to continue",
              file=sys.stderr)
        sys.exit(3)
    except NcfError as exc:  # a bad config file or data folder: one line, no traceback
        raise SystemExit(f"error: {exc}") from None
