"""`python -m ncf_tune.train`: train one config, no Ray needed.

    python -m ncf_tune.train --model gmf --data ml-1m --epochs 20 --factors 8
    python -m ncf_tune.train --config results/neumf-ml1m/neumf/best_config.yaml

Settings come from TrainConfig's defaults, then the --config YAML (same keys as the
options, with underscores), then the options given on the command line. Prints a line
per epoch, writes TensorBoard scalars and a checkpoint (model.pt) under --out, scores
the test set once at the end, and with --json ends with one JSON line.

model.pt holds the epoch with the best validation NDCG@10 (`--keep best`, the default,
as Keras' restore_best_weights), or the last one (`--keep last`); the test set scores
that epoch, and the JSON line names it. `--eval full` scores validation and test by full
ranking instead of the paper's 99 sampled negatives (see ranking.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ncf_tune import cache, checkpoint, data, training
from ncf_tune.cli import Parser, guarded, non_negative_float, positive_float, positive_int
from ncf_tune.config import EVALS, LR_SCHEDULES, OPTIMIZERS, PRECISIONS, TrainConfig
from ncf_tune.errors import NcfError
from ncf_tune.files import read_yaml_mapping, write_text_atomic
from ncf_tune.models import MODELS

RUN_KEYS = ("data", "device", "out", "threads", "keep")  # settings of the run, not the model
KEEPS = ("best", "last")


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m ncf_tune.train", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,  # only flags actually given override --config
    )
    p.add_argument("--config", help="YAML of settings (e.g. a search's best_config.yaml)")
    p.add_argument("--data", help="ml-1m | ml-100k | ml-20m | ratings file | paper split folder "
                   "(default ml-1m)")
    p.add_argument("--model", choices=MODELS)
    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--factors", type=positive_int, help="GMF factors")
    p.add_argument("--layers", help="MLP tower sizes, comma separated, e.g. 64,32,16,8")
    p.add_argument("--lr", type=positive_float)
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--lr-batch", type=int, help="the batch size --lr was chosen at; at another "
                   "--batch-size lr is scaled from it (linear for SGD, square root for Adam)")
    p.add_argument("--num-negatives", type=positive_int)
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES)
    p.add_argument("--warmup-epochs", type=int)
    p.add_argument("--schedule-epochs", type=int,
                   help="where the cosine schedule ends, if not at --epochs")
    p.add_argument("--l2", type=non_negative_float, help="weight decay on every parameter")
    p.add_argument("--embedding-l2", type=non_negative_float,
                   help="L2 on the embeddings each row uses (Rendle et al. 2020)")
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--unobserved-weight", type=positive_float,
                   help="als: alpha0, the weight pulling every unobserved pair's score to 0")
    p.add_argument("--momentum", type=non_negative_float, help="SGD momentum")
    p.add_argument("--init-std", type=positive_float, help="embedding init std")
    p.add_argument("--dropout", type=non_negative_float)
    p.add_argument("--biases", action=argparse.BooleanOptionalAction,
                   help="learn a user and an item bias (added to the logit)")
    p.add_argument("--dot-product", action=argparse.BooleanOptionalAction,
                   help="GMF: fix h to ones (plain MF, as Rendle et al. 2020)")
    p.add_argument("--precision", choices=PRECISIONS, help="bf16: autocast for training")
    p.add_argument("--alpha", type=non_negative_float, help="NeuMF: GMF share of the output")
    p.add_argument("--seed", type=int)
    p.add_argument("--eval", choices=EVALS, help="validation and test HR/NDCG@10: the paper's "
                   "99 sampled negatives, or full ranking against every unseen item "
                   "(default sampled)")
    p.add_argument("--keep", choices=KEEPS, help="which epoch model.pt holds and the test set "
                   "scores: the best by validation NDCG@10, or the last (default best)")
    p.add_argument("--pretrain-gmf", nargs="+", metavar="PATH",
                   help="GMF checkpoint(s) (NeuMF, side by side; or one for MLP embeddings)")
    p.add_argument("--pretrain-mlp", nargs="+", metavar="PATH",
                   help="MLP checkpoint(s) (NeuMF, side by side)")
    p.add_argument("--resume", help="checkpoint of this config to continue from")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto")
    p.add_argument("--threads", type=positive_int,
                   help="torch CPU threads (default: torch's, one per core). A search's "
                   "best_config.yaml gives its trial's: bf16 training on another number of "
                   "threads rounds differently and ends elsewhere")
    p.add_argument("--out", help="folder for model.pt, metrics.json and TensorBoard events "
                   "(default runs/<model>)")
    p.add_argument("--json", action="store_true", help="end with one JSON line of results")
    return p


def settings(args: argparse.Namespace) -> tuple[TrainConfig, dict[str, Any]]:
    """Merge defaults < --config file < command line; returns (model config, run settings)."""
    given = vars(args).copy()
    merged: dict[str, Any] = {}
    where = "command line"
    if "config" in given:
        where = given.pop("config")
        merged.update(read_yaml_mapping(where))
    given.pop("json", None)
    given.pop("resume", None)
    merged.update(given)
    run = {"data": "ml-1m", "device": "auto", "out": None, "threads": None, "keep": "best"}
    for key in RUN_KEYS:
        if key in merged:
            run[key] = merged.pop(key)
    threads = run["threads"]
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or threads < 1):
        raise NcfError(f"{where}: threads={threads!r} is not a positive integer")
    if run["keep"] not in KEEPS:
        raise NcfError(f"{where}: keep={run['keep']!r} is not one of {', '.join(KEEPS)}")
    cfg = TrainConfig.from_dict(merged, where=where)
    run["out"] = Path(run["out"] or f"runs/{cfg.model}")
    return cfg, run


@dataclass
class Kept:
    """The epoch model.pt will hold, its validation figures and (--keep best) a CPU copy
    of its weights and optimiser state, taken when it ran: cheap, and nothing is
    retrained or reloaded from disk at the end."""

    epoch: int
    hr: float | None
    ndcg: float | None
    model_state: dict[str, Any] | None = None
    optimizer_state: dict[str, Any] | None = None


def _cpu_copy(value: Any) -> Any:
    """A state dict's tensors copied to the CPU (nested dicts and lists followed)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(v) for v in value)
    return value


def check_resume(cfg: TrainConfig, ck: checkpoint.Checkpoint, path: str,
                 split: data.Split) -> None:
    """Refuse to continue `ck` with other training settings or other data: the epochs
    after it would silently mix two recipes. `epochs` may grow (not shrink below the
    checkpoint's); run settings (threads, device, out, keep) are free."""
    def training_keys(c: TrainConfig) -> dict[str, Any]:
        keys = c.to_dict()
        del keys["epochs"]
        # A cosine decay ends at schedule_epochs, else at epochs: compare where it ends,
        # so growing epochs with the end kept (--schedule-epochs) is the same recipe.
        keys["schedule_epochs"] = ((c.schedule_epochs or c.epochs)
                                   if c.lr_schedule == "cosine" else None)
        return keys

    if cfg.epochs < ck.epoch:
        raise NcfError(f"--resume {path}: it has trained {ck.epoch} epochs, more than "
                       f"--epochs {cfg.epochs}; raise --epochs")
    old, new = training_keys(ck.config), training_keys(cfg)
    differ = [f"{k} {old[k]!r} there, {new[k]!r} here" for k in old if old[k] != new[k]]
    if differ:
        raise NcfError(f"--resume {path}: trained with other settings ({'; '.join(differ)}); "
                       "resume with the checkpoint's settings or train without --resume")
    if ck.ids is not None and split.ids is not None \
            and ck.ids.fingerprint != split.ids.fingerprint:
        raise NcfError(f"--resume {path}: trained on other data ({ck.ids.source}); pass "
                       "--data with the data it was trained on")
    if (ck.num_users, ck.num_items) != (split.num_users, split.num_items):
        raise NcfError(f"--resume {path}: trained on {ck.num_users} users x {ck.num_items} "
                       f"items, the data has {split.num_users} x {split.num_items}; pass "
                       "--data with the data it was trained on")


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse `argv`, train, and return the results the --json line prints."""
    args = parser().parse_args(argv)
    cfg, run_settings = settings(args)
    if run_settings["threads"] is not None:
        torch.set_num_threads(run_settings["threads"])
    device = training.choose_device(str(run_settings["device"]))
    out: Path = run_settings["out"]
    keep_best = run_settings["keep"] == "best"
    resume = checkpoint.load(args.resume, expect_model=cfg.model) if "resume" in args else None
    started = time.perf_counter()
    split = cache.prepare(str(run_settings["data"]), seed=cfg.seed)  # once per file and seed
    if resume is not None:
        check_resume(cfg, resume, args.resume, split)
    for note in split.notes:
        print(f"data: {note}", file=sys.stderr)
    kept = None
    if resume is not None:
        m = resume.metrics  # model.pt's keys are val_*, a search trial's hr/ndcg
        kept = Kept(resume.epoch, m.get("val_hr", m.get("hr")), m.get("val_ndcg", m.get("ndcg")),
                    resume.model_state, resume.optimizer_state)

    from tensorboardX import SummaryWriter  # imported late: a second or so of import time

    out.mkdir(parents=True, exist_ok=True)
    writer = SummaryWriter(str(out))

    def on_epoch(res: training.EpochResult, state: training.TrainState) -> None:
        nonlocal kept
        loss = f"{res.loss:.4f}" if res.epoch > 0 else "     -"  # epoch 0: nothing trained
        print(f"epoch {res.epoch:3d}/{cfg.epochs}  loss {loss}  val HR@10 {res.hr:.4f}"
              f"  NDCG@10 {res.ndcg:.4f}  {res.seconds:.1f}s", flush=True)
        if res.epoch > 0:  # epoch 0, a pretrained NeuMF before training, has no loss
            writer.add_scalar("train/loss", res.loss, res.epoch)
        writer.add_scalar("validation/HR@10", res.hr, res.epoch)
        writer.add_scalar("validation/NDCG@10", res.ndcg, res.epoch)
        writer.add_scalar("time/epoch_seconds", res.seconds, res.epoch)
        if not keep_best:
            kept = Kept(res.epoch, res.hr, res.ndcg)
        elif not res.diverged and (kept is None or kept.ndcg is None or res.ndcg > kept.ndcg):
            kept = Kept(res.epoch, res.hr, res.ndcg, _cpu_copy(state.model.state_dict()),
                        None if state.optimizer is None  # als keeps no optimiser state
                        else _cpu_copy(state.optimizer.state_dict()))

    try:
        result = training.fit(cfg, split, device, on_epoch=on_epoch, resume=resume)
    finally:
        writer.close()
    if result.diverged:
        raise NcfError(f"training diverged at epoch {result.history[-1].epoch} (loss is "
                       f"{result.history[-1].loss}); lower --lr or raise --l2")
    assert kept is not None  # fit ran an epoch, or resumed from one
    if kept.model_state is not None:  # --keep best: that epoch's weights back in
        result.model.load_state_dict(kept.model_state)
        if kept.optimizer_state is not None and result.optimizer is not None:
            result.optimizer.load_state_dict(kept.optimizer_state)
    if cfg.eval == "full":
        test_hr, test_ndcg = training.evaluate_full(result.model, split, "test", device)
    else:
        test_hr, test_ndcg = training.evaluate(result.model,
                                               training.to_device(split.test, device))
    summary = {
        "model": cfg.model,
        "epochs": cfg.epochs,
        "epoch": kept.epoch,  # the epoch model.pt holds and the test set scored
        "eval": cfg.eval,
        "val_hr": kept.hr,
        "val_ndcg": kept.ndcg,
        "test_hr": test_hr,
        "test_ndcg": test_ndcg,
        "seconds": round(time.perf_counter() - started, 3),
    }
    scores = {k: v for k, v in summary.items() if isinstance(v, float)}
    checkpoint.save(out / "model.pt", result.model, result.optimizer, cfg, kept.epoch,
                    split.num_users, split.num_items, scores, split.ids)
    write_text_atomic(out / "metrics.json", json.dumps(summary, indent=2) + "\n")
    print(f"test HR@10 {test_hr:.4f}  NDCG@10 {test_ndcg:.4f} ({cfg.eval}, epoch {kept.epoch})"
          f"  -> {out}/model.pt", file=sys.stderr)
    return summary


def main(argv: list[str] | None = None) -> int:
    want_json = "--json" in (argv if argv is not None else sys.argv[1:])

    def body() -> int:
        summary = run(argv)
        if want_json:
            print(json.dumps(summary))
        return 0

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
