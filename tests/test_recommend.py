"""`python -m ncf_tune.recommend` on models trained for an epoch on tiny generated data."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_ratings, write_dat, write_paper_split

from ncf_tune import checkpoint, data, titles, training
from ncf_tune import recommend as rec_cli
from ncf_tune import train as train_cli
from ncf_tune.config import TrainConfig
from ncf_tune.errors import NcfError
from ncf_tune.models import build


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A GMF trained for one epoch by ncf_tune.train on ratings whose raw ids are not
    0..n-1, with a movies.dat beside them; (model.pt, the rating rows)."""
    folder = tmp_path_factory.mktemp("ml")
    rows = make_ratings()
    rows[:, 0] = rows[:, 0] * 7 + 1000
    rows[:, 1] = rows[:, 1] * 3 + 500
    write_dat(folder / "ratings.dat", rows)
    items = np.unique(rows[:, 1])
    (folder / "movies.dat").write_bytes("".join(
        f"{i}::Film {i}, été ({1990 + i % 10})::Drama\n" for i in items).encode("latin-1"))
    train_cli.run(["--model", "gmf", "--data", str(folder / "ratings.dat"), "--factors", "8",
                   "--epochs", "1", "--lr", "0.05", "--out", str(folder / "run")])
    return folder / "run" / "model.pt", rows


def recommend(capsys, *args: str) -> tuple[int, str, str]:
    try:
        code = rec_cli.main(list(args))
    except SystemExit as exc:  # argparse's errors
        code = int(exc.code)
    out = capsys.readouterr()
    return code, out.out, out.err


def brute_force(model_path: Path, rows: np.ndarray, user: int, k: int,
                include_seen: bool = False) -> list[int]:
    """The definition: score every item with forward(), drop the seen ones, sort."""
    ck = checkpoint.load(model_path)
    raw_users, raw_items = ck.ids.users.tolist(), ck.ids.items.tolist()
    u = raw_users.index(user)
    with torch.no_grad():
        model = ck.model().eval()
        scores = model(torch.full((len(raw_items),), u), torch.arange(len(raw_items))).tolist()
    seen = set() if include_seen else {int(i) for uu, i in rows[:, :2] if uu == user}
    ranked = sorted((i for i in range(len(raw_items)) if raw_items[i] not in seen),
                    key=lambda i: -scores[i])
    return [raw_items[i] for i in ranked[:k]]


def test_raw_ids_in_and_out_and_seen_items_left_out(trained, capsys):
    model, rows = trained
    users = [1007, 1070, 1014]
    code, out, _ = recommend(capsys, "--model", str(model), "--users", *map(str, users),
                             "--format", "jsonl", "--k", "5")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["user"] for line in lines] == users  # in the order given
    for line in lines:
        assert line["items"] == brute_force(model, rows, line["user"], 5)
        assert line["scores"] == sorted(line["scores"], reverse=True)
        assert line["titles"] == [f"Film {i}, été ({1990 + i % 10})" for i in line["items"]]

    code, out, _ = recommend(capsys, "--model", str(model), "--all-users", "--format",
                             "jsonl", "--k", "5", "--include-seen")
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == len(np.unique(rows[:, 0]))
    seen = {(int(u), int(i)) for u, i in rows[:, :2]}
    assert any((line["user"], i) in seen for line in lines for i in line["items"])
    for line in lines[:3]:
        assert line["items"] == brute_force(model, rows, line["user"], 5, include_seen=True)


def test_csv_and_table_formats_with_titles(trained, capsys, tmp_path):
    model, _ = trained
    out_file = tmp_path / "top.csv"
    code, out, err = recommend(capsys, "--model", str(model), "--users", "1007", "1014",
                               "--format", "csv", "--out", str(out_file))
    assert code == 0 and out == "" and f"-> {out_file}" in err
    table = list(csv.DictReader(io.StringIO(out_file.read_text())))
    assert list(table[0]) == ["user", "rank", "item", "score", "title"]
    assert [(r["user"], r["rank"]) for r in table] == [
        (u, str(r)) for u in ("1007", "1014") for r in range(1, 11)]
    assert table[0]["title"].startswith("Film ")  # the comma in it survives CSV quoting

    code, out, _ = recommend(capsys, "--model", str(model), "--users", "1007", "--k", "3")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["user", "rank", "item", "score", "title"]
    assert len(lines) == 4 and lines[1].split()[:2] == ["1007", "1"] and "Film" in lines[1]


@pytest.mark.parametrize("kind", ["mlp", "neumf"])
def test_mlp_and_neumf_checkpoints_recommend_what_forward_ranks(trained, capsys, tmp_path,
                                                                  kind):
    path, rows = trained
    split = data.prepare(checkpoint.load(path).ids.source)
    cfg = TrainConfig(model=kind, factors=6, layers=(12, 6), biases=True, init_std=0.5)
    torch.manual_seed(0)
    model = build(kind, split.num_users, split.num_items, 6, (12, 6), init_std=0.5,
                  biases=True)
    saved = checkpoint.save(tmp_path / "m.pt", model, None, cfg, 1, split.num_users,
                            split.num_items, ids=split.ids)
    code, out, _ = recommend(capsys, "--model", str(saved), "--users", "1021", "--format",
                             "jsonl", "--k", "7")
    assert code == 0
    assert json.loads(out)["items"] == brute_force(saved, rows, 1021, 7)


def test_a_paper_split_leaves_out_test_items_too_and_has_no_titles(tmp_path, capsys):
    split = data.prepare(write_paper_split(tmp_path / "paper"))
    cfg = TrainConfig(model="gmf", factors=4, epochs=1)
    result = training.fit(cfg, split)
    path = checkpoint.save(tmp_path / "m.pt", result.model, None, cfg, 1, split.num_users,
                           split.num_items, ids=split.ids)
    code, out, _ = recommend(capsys, "--model", str(path), "--all-users", "--format", "jsonl",
                             "--k", "50")
    assert code == 0
    seen = set(zip(split.train_users.tolist(), split.train_items.tolist(), strict=True))
    seen |= set(zip(split.test.users.tolist(), split.test.candidates[:, 0].tolist(),
                    strict=True))
    seen |= set(zip(split.validation.users.tolist(), split.validation.candidates[:, 0].tolist(),
                    strict=True))
    lines = [json.loads(line) for line in out.splitlines()]
    assert "titles" not in lines[0]
    assert not {(line["user"], i) for line in lines for i in line["items"]} & seen


def test_bad_input_is_one_line_exit_2(trained, capsys, tmp_path):
    model, rows = trained
    other = write_dat(tmp_path / "other.dat", rows[1:])
    old = tmp_path / "old.pt"
    ck = checkpoint.load(model)
    checkpoint.save(old, ck.model(), None, ck.config, 1, ck.num_users, ck.num_items)  # no ids
    for args, expect in [
        (["--users", "1007", "5"], "--users: user 5 is not in"),
        (["--users", "1007", "--data", str(other)], f"{other}: not the data {model} was "
                                                    "trained on"),
        (["--users", "1007", "--data", str(tmp_path / "none.dat")], "none.dat' is neither"),
        (["--users", "x"], "argument --users: invalid int value: 'x'"),
        (["--users", "1007", "--k", "0"], "--k: must be at least 1"),
        ([], "one of the arguments --users --all-users is required"),
    ]:
        code, out, err = recommend(capsys, "--model", str(model), *args)
        assert code == 2 and expect in err and out == "", err
        assert len(err.strip().splitlines()) == 1
    code, _, err = recommend(capsys, "--model", str(old), "--users", "1007")
    assert code == 2 and "saved before checkpoints carried the data's ids" in err
    code, _, err = recommend(capsys, "--model", str(tmp_path / "missing.pt"), "--all-users")
    assert code == 2 and "checkpoint not found" in err


def test_titles_of_each_grouplens_release_are_read_beside_the_ratings(tmp_path):
    for name, text, encoding in [
        ("u.item", "1|Toy Story (1995)|01-Jan-1995||http://x|0|0\n"
                   "2|Señor \"Spielberg\" (1996)|01-Jan-1996||http://y|0|1\n", "latin-1"),
        ("movies.csv", 'movieId,title,genres\n1,Toy Story (1995),Animation\n'
                       '2,"Señor ""Spielberg"", The (1996)",Comedy\n', "utf-8"),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / name).write_bytes(text.encode(encoding))
        ratings = write_dat(folder / "ratings.dat", make_ratings())
        got = titles.load(str(ratings))
        assert got[1] == "Toy Story (1995)" and got[2].startswith('Señor "Spielberg"'), got
    assert titles.load(str(tmp_path)) == {}  # a folder: a paper split, which has none
    (tmp_path / "movies.dat").write_text("not an id::title\n")
    with pytest.raises(NcfError, match="movies.dat: not a titles file"):
        titles.load(str(write_dat(tmp_path / "ratings.dat", make_ratings())))
