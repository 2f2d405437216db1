"""`python -m ncf_tune.recommend`: the top-k items for users, from a trained model.

    python -m ncf_tune.recommend --model results/neumf-ml1m/neumf/best_model.pt --users 42
    python -m ncf_tune.recommend --model runs/gmf/model.pt --all-users --format csv --out top10.csv

Any checkpoint of this version works: a search's best_model.pt of any stage (a NeuMF of
several parts too) or ncf_tune.train's model.pt. Ids in and out are the data's own: the
checkpoint carries its raw ids and the fingerprint of the data it was trained on, which
is loaded again (from where the checkpoint says, or --data) and must match. Every item
a user interacted with in that data (training, validation and test alike) is left out,
unless --include-seen. A score is the model's logit: higher ranks first.

Formats: `table` (for a terminal), `jsonl` (one line per user: {"user", "items",
"scores"[, "titles"]}), `csv` (user,rank,item,score[,title]). Titles come from the
source's movies.dat / u.item / movies.csv, where there is one (see titles.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ncf_tune import cache, checkpoint, data, ranking, titles, training
from ncf_tune.cli import Parser, guarded, positive_int
from ncf_tune.errors import NcfError
from ncf_tune.files import write_text_atomic

FORMATS = ("table", "jsonl", "csv")


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m ncf_tune.recommend", description=__doc__.split("\n\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, metavar="CKPT",
                   help="best_model.pt of a search stage, or model.pt of ncf_tune.train")
    p.add_argument("--data", help="the data it was trained on (default: as the checkpoint "
                   "records it)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--users", type=int, nargs="+", metavar="ID", help="the data's user ids")
    who.add_argument("--all-users", action="store_true", help="every user in the data")
    p.add_argument("--k", type=positive_int, default=10, help="items per user")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--out", metavar="FILE", help="write here (atomically), not to stdout")
    p.add_argument("--include-seen", action="store_true",
                   help="also offer items the user already interacted with")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return p


@dataclass(frozen=True)
class Recommendations:
    """Top-k lists in the data's raw ids: row r is users[r]'s, best first. A row ends
    early (valid False) where the user has fewer than k items left to offer."""

    users: np.ndarray  # [n] int64 raw user ids
    items: np.ndarray  # [n, k] int64 raw item ids
    scores: np.ndarray  # [n, k] float32 logits
    valid: np.ndarray  # [n, k] bool
    titles: dict[int, str]  # raw item id -> title; {} when the source has none


def recommend(ck: checkpoint.Checkpoint, inter: data.Interactions, users: np.ndarray | None,
              k: int = 10, include_seen: bool = False,
              device: torch.device | str = "cpu") -> Recommendations:
    """Top-k items for `users` (the data's raw ids; None: every user) by the model in
    `ck`, which must have been trained on `inter`. Scored in chunks of users x all items
    on `device`; raises NcfError for an unknown user id."""
    ids = ck.ids
    if ids is None or ids.fingerprint != inter.fingerprint:
        raise NcfError(f"{inter.source}: the checkpoint carries no ids or was trained on other "
                       "data; load both with load_for_recommending, which says which")
    device = torch.device(device)
    rows = (np.arange(inter.num_users) if users is None
            else _user_rows(inter, pd.unique(np.asarray(users, dtype=np.int64))))
    rows_t = torch.from_numpy(rows).to(device)
    exclude = None
    if not include_seen:
        seen_users, seen_items = inter.seen()
        exclude = ranking.ItemSets(rows_t, torch.from_numpy(seen_users),
                                   torch.from_numpy(seen_items), inter.num_users)
    model = ck.model(device)
    items, scores = ranking.top_k(model, rows_t, inter.num_items, k, exclude)
    items, scores = items.cpu(), scores.cpu()
    return Recommendations(
        users=ids.users[rows].numpy(),
        items=ids.items[items].numpy(),
        scores=scores.numpy(),
        valid=(scores > float("-inf")).numpy(),
        titles=titles.load(inter.source),
    )


def _user_rows(inter: data.Interactions, raw: np.ndarray) -> np.ndarray:
    """Row index of each raw user id; NcfError naming the first that is not in the data."""
    at = np.minimum(np.searchsorted(inter.raw_users, raw), inter.num_users - 1)
    unknown = raw[inter.raw_users[at] != raw]
    if unknown.size:
        more = f" (and {unknown.size - 1} more)" if unknown.size > 1 else ""
        raise NcfError(f"--users: user {unknown[0]}{more} is not in {inter.source} "
                       f"({inter.num_users} users, ids {inter.raw_users[0]}.."
                       f"{inter.raw_users[-1]}); give ids as the ratings file has them")
    return at


def load_for_recommending(model_path: str, source: str | None
                          ) -> tuple[checkpoint.Checkpoint, data.Interactions]:
    """The checkpoint and the data it was trained on (`source`, else the checkpoint's);
    NcfError when the checkpoint has no id maps or the data is not the same."""
    ck = checkpoint.load(model_path)
    if ck.ids is None:
        raise NcfError(f"{model_path}: saved before checkpoints carried the data's ids, so its "
                       "rows cannot be mapped back to users and items; retrain it (or rerun "
                       "the search) with this version of ncf_tune")
    try:
        inter = cache.load(source or ck.ids.source)  # parsed once per file (cache.py)
    except NcfError as exc:
        if source is not None:
            raise
        raise NcfError(f"{model_path}: the data it was trained on cannot be loaded here "
                       f"({exc}); pass --data with that data") from None
    if inter.fingerprint != ck.ids.fingerprint or (inter.num_users, inter.num_items) != (
            ck.num_users, ck.num_items):
        raise NcfError(f"{inter.source}: not the data {model_path} was trained on "
                       f"({ck.ids.source}: {ck.num_users} users x {ck.num_items} items, "
                       f"fingerprint {ck.ids.fingerprint}; this has {inter.num_users} x "
                       f"{inter.num_items}, {inter.fingerprint}); pass --data with that data")
    return ck, inter


def long_table(rec: Recommendations) -> pd.DataFrame:
    """One row per recommendation: user, rank (1 = best), item, score[, title]."""
    n, k = rec.items.shape
    keep = rec.valid.ravel()
    df = pd.DataFrame({
        "user": np.repeat(rec.users, k)[keep],
        "rank": np.tile(np.arange(1, k + 1), n)[keep],
        "item": rec.items.ravel()[keep],
        "score": np.round(rec.scores.ravel()[keep].astype(np.float64), 6),
    })
    if rec.titles:
        df["title"] = df["item"].map(rec.titles).fillna("")
    return df


def render(rec: Recommendations, fmt: str) -> str:
    """The recommendations as text in `fmt` (one of FORMATS)."""
    if fmt == "jsonl":
        lines = []
        for r, user in enumerate(rec.users.tolist()):
            valid = rec.valid[r]
            items = rec.items[r][valid].tolist()
            line = {"user": user, "items": items,
                    "scores": [round(s, 6) for s in rec.scores[r][valid].tolist()]}
            if rec.titles:
                line["titles"] = [rec.titles.get(i, "") for i in items]
            lines.append(json.dumps(line, ensure_ascii=False) + "\n")
        return "".join(lines)
    df = long_table(rec)
    if fmt == "csv":
        return df.to_csv(index=False)
    # table: numbers right-aligned under their headers, titles left-aligned after them
    cols = {"user": df["user"].astype(str), "rank": df["rank"].astype(str),
            "item": df["item"].astype(str), "score": df["score"].map("{:.4f}".format)}
    widths = {c: max(len(c), int(v.str.len().max()) if len(v) else 0)
              for c, v in cols.items()}
    header = "  ".join(c.rjust(widths[c]) for c in cols)
    body = pd.Series([""] * len(df), dtype=object)
    for i, (c, v) in enumerate(cols.items()):
        body = body + ("  " if i else "") + v.str.rjust(widths[c]).to_numpy()
    if "title" in df:
        header += "  title"
        body = body + "  " + df["title"].to_numpy()
    return "\n".join([header, *body.tolist()]) + "\n"


def run(argv: list[str] | None = None) -> Recommendations:
    """Parse `argv`, recommend, and write the output; returns the recommendations."""
    args = parser().parse_args(argv)
    device = training.choose_device(args.device)
    started = time.perf_counter()
    ck, inter = load_for_recommending(args.model, args.data)
    users = None if args.all_users else np.asarray(args.users, dtype=np.int64)
    rec = recommend(ck, inter, users, args.k, args.include_seen, device)
    untrained = data.untrained_users(inter)[_user_rows(inter, rec.users)]
    if untrained.any() and not args.all_users:
        print(f"note: user {rec.users[untrained][0]} has too few interactions in "
              f"{inter.source} for training to have used them; its list says little about "
              "its tastes", file=sys.stderr)
    text = render(rec, args.format)
    if args.out:
        write_text_atomic(args.out, text)
        print(f"{len(rec.users)} users x top {args.k} in {time.perf_counter() - started:.1f} s"
              f" -> {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return rec


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        run(argv)
        return 0

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
