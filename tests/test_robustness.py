"""Bad input and unsafe input that the other test files do not cover."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ncf_tune import checkpoint, cluster, data, search, spaces
from ncf_tune.errors import NcfError


def test_a_binary_file_is_not_a_ratings_file(tmp_path):
    path = tmp_path / "ratings.dat"
    path.write_bytes(os.urandom(4096) + b"\xc2\x00")
    with pytest.raises(NcfError, match="not a readable ratings file") as err:
        data.load(path)
    assert "\n" not in str(err.value)


def test_yaml_tags_are_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "space.yaml"
    path.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(NcfError, match="not valid YAML"):
        spaces.load_chain(path)
    assert not marker.exists()


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {Path(os.environ['MARKER'])}",))


def test_a_checkpoint_with_code_in_it_is_refused_not_run(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("MARKER", str(marker))
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        torch.save({"format": checkpoint.FORMAT, "config": Payload()}, f)
    with pytest.raises(NcfError, match="not a readable checkpoint"):
        checkpoint.load(path)
    assert not marker.exists()


def test_unwritable_results_folder_is_refused_before_trials_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    space = Path(__file__).resolve().parent.parent / "search_spaces" / "gmf.yaml"
    with pytest.raises(NcfError, match="cannot write results here"):
        search.run_chain(space, results_dir=blocker / "results")


def test_a_nearly_full_disk_is_refused_before_trials_start(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster, "MIN_FREE_BYTES", 2**62)
    space = Path(__file__).resolve().parent.parent / "search_spaces" / "gmf.yaml"
    with pytest.raises(NcfError, match="MiB free; a search needs at least"):
        search.run_chain(space, results_dir=tmp_path / "results")


def test_search_cli_bad_option_values_fail_at_parse_time(tmp_path):
    space = Path(__file__).resolve().parent.parent / "search_spaces" / "gmf.yaml"
    for args, expect in ((["--num-samples", "0"], "--num-samples: must be at least 1"),
                         (["--max-epochs", "-2"], "--max-epochs: must be at least 1"),
                         (["--frobnicate"], "unrecognized arguments")):
        p = subprocess.run([sys.executable, "-m", "ncf_tune.search", "--space", str(space),
                            *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert p.returncode == 2 and expect in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1


def test_a_second_search_process_on_the_same_experiment_is_refused(tmp_path):
    space = Path(__file__).resolve().parent.parent / "search_spaces" / "gmf.yaml"
    results = tmp_path / "results"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from ncf_tune import cluster\n"
         f"with cluster.experiment_lock(Path({str(results / 'exp')!r})):\n"
         "    print('locked', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        p = subprocess.run([sys.executable, "-m", "ncf_tune.search", "--space", str(space),
                            "--results", str(results), "--experiment", "exp"],
                           capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [
        f"error: {results / 'exp'}: another search is writing to this experiment; wait for "
        "it, or pass --experiment NAME to use another folder"]
