"""A results folder that fills up (or turns unwritable) mid-stage: one line naming the
folder, none of the stage's files half-written, and --resume goes on once there is
room. On a real small filesystem (a tmpfs, mounted here when the machine allows it:
CI runs as root), else with the write failing as a full disk makes it fail."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import faults
import pytest
import ray
from conftest import make_ratings, write_dat

from ncf_tune import files, results, search
from ncf_tune.errors import NcfError

REPO = Path(__file__).resolve().parent.parent
SPACE = """
model: gmf
data: {data}
params:
  factors: 8
  lr: {{loguniform: [1.0e-3, 1.0e-2]}}
  batch_size: 128
num_samples: 4
max_epochs: 3
scheduler: {{type: none}}
"""


def _mount(folder: Path, size: str) -> str | None:
    """Mount a tmpfs of `size` at `folder`; None when done, else why it cannot be."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                            str(folder)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"mount: {exc}"
    return None if p.returncode == 0 else f"mount -t tmpfs not permitted ({p.stderr.strip()})"


@pytest.fixture
def small_disk(tmp_path):
    """A 300 MiB tmpfs: above the search's 256 MiB floor at start, filled up mid-stage."""
    mnt = tmp_path / "disk"
    why = _mount(mnt, "300m")
    if why is not None:
        pytest.skip(why)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


@pytest.fixture
def ray_filling(small_disk):
    path = os.pathsep.join([str(REPO / "tests"), str(REPO)])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path,
                                       "NCF_TUNE_TEST_FILL": str(small_disk)}})
    os.environ["NCF_TUNE_TEST_FILL"] = str(small_disk)
    yield small_disk
    os.environ.pop("NCF_TUNE_TEST_FILL", None)
    ray.shutdown()


@pytest.mark.slow
def test_a_disk_that_fills_mid_stage_is_one_line_and_resume_goes_on(tmp_path, ray_filling,
                                                                    capfd):
    disk = ray_filling
    ratings = write_dat(tmp_path / "ratings.dat", make_ratings(num_users=80, num_items=120))
    space = tmp_path / "gmf.yaml"
    space.write_text(SPACE.format(data=ratings))
    run = {"results_dir": disk, "experiment": "e", "trainable": faults.fill_disk_after_epoch_1}
    with pytest.raises(NcfError) as stopped:
        search.run_chain(space, **run)
    line = str(stopped.value)
    stage = disk / "e" / "gmf"
    assert line.startswith(f"{stage}: no space left") and "--resume" in line
    assert "\n" not in line
    assert "Trial task failed" not in capfd.readouterr().err  # no traceback from Tune
    # Nothing of the stage's results, whole or half: only Tune's state and the marker.
    assert sorted(p.name for p in stage.iterdir()) == ["search.json", "tune"]
    assert sorted(p.name for p in (disk / "e").iterdir()) == [".lock", "gmf"]
    assert not (disk / "e" / "report.md").exists()
    assert not list(stage.glob(".*"))  # no temp file of an atomic write left behind
    os.truncate(disk / "filler", 0)  # room again (the empty file: the disk filled once)
    summary = search.run_chain(space, resume=True, **run)[0]
    assert summary.trials == 4 and summary.statuses["error"] == 0
    assert results.read_summary(disk / "e", "gmf") == summary
    assert (stage / "best_model.pt").is_file() and (disk / "e" / "report.md").is_file()


def test_a_full_or_read_only_folder_is_named_as_such(tmp_path):
    mnt = tmp_path / "tiny"
    why = _mount(mnt, "8m")
    if why is not None:
        pytest.skip(why)
    try:
        assert files.write_problem(mnt) is None
        with open(mnt / "filler", "wb") as f, pytest.raises(OSError):
            while True:
                f.write(b"\0" * 2**16)
                f.flush()
        assert files.write_problem(mnt).startswith("no space left (0.0 MiB free)")
        (mnt / "filler").unlink()
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, timeout=30)
        assert files.write_problem(mnt, low_bytes=0) == "not writable (Read-only file system)"
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


def test_a_stage_whose_results_cannot_all_be_written_leaves_none_of_them(tmp_path,
                                                                        monkeypatch):
    # The disk fills between the stage's files: those written are removed again, so no
    # stage folder holds a model and config without the summary.json that vouches for them.
    model = tmp_path / "m.pt"
    model.write_bytes(b"model")
    real = results.write_text_atomic

    def full_at_summary(path, text):
        if Path(path).name == "summary.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text)

    monkeypatch.setattr(results, "write_text_atomic", full_at_summary)
    summary = results.StageSummary(
        stage="gmf", model="gmf", key="k", data="d", data_fingerprint="f", metric="hr",
        winner_trial="t", best_epoch=1, val_hr=0.5, val_ndcg=0.3, test_hr=0.5,
        test_ndcg=0.3, trials=1, statuses={"completed": 1}, wall_seconds=1.0,
        trial_seconds=1.0, best_config={"model": "gmf"})
    with pytest.raises(OSError) as full:
        results.write_stage(tmp_path / "e", summary, [], [model])
    assert files.is_disk_error(full.value)
    assert list((tmp_path / "e" / "gmf").iterdir()) == []
