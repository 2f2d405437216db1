"""Trials use exactly the devices Ray granted them, proven on a CPU machine with GPUs that
Ray declares (`ray.init(num_gpus=2)`) but that do not exist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray
import torch
from conftest import make_ratings, write_dat
from ray import tune

from ncf_tune import cluster, placement, search, spaces
from ncf_tune.config import TrainConfig
from ncf_tune.errors import NcfError
from ncf_tune.trainable import train_ncf

TESTS = Path(__file__).resolve().parent


def test_a_trial_without_a_gpu_trains_on_the_cpu_and_a_granted_gpu_is_its_own():
    assert placement.device_for(placement.Grant((), None)) == "cpu"
    assert placement.device_for(placement.Grant((), "0,1")) == "cpu"
    # Ray narrows CUDA_VISIBLE_DEVICES to the grant: the GPU is the worker's cuda:0
    assert placement.device_for(placement.Grant(("1",), "1")) == "cuda:0"
    # several visible (a worker that saw more): the granted one, by its place
    assert placement.device_for(placement.Grant(("3",), "2,3")) == "cuda:1"
    # visibility left unset: Ray's id is the CUDA ordinal
    assert placement.device_for(placement.Grant(("2",), None)) == "cuda:2"
    with pytest.raises(NcfError, match="hides it"):
        placement.device_for(placement.Grant(("1",), "0"))


def test_a_gpu_trial_trains_at_a_gpu_batch_with_the_lr_of_its_config():
    cfg = TrainConfig(model="gmf", batch_size=4096, lr=0.01)
    on_gpu = placement.on_device(cfg, torch.device("cuda:0"))
    assert on_gpu.batch_size == placement.GPU_BATCH and on_gpu.lr_batch == 4096
    assert on_gpu.lr == cfg.lr  # scaled where it is used: training.batch_lr
    assert placement.on_device(cfg, torch.device("cpu")) == cfg
    big = cfg.replace(batch_size=1 << 18)
    assert placement.on_device(big, torch.device("cuda:0")) == big
    # a config that already names its lr's batch keeps it
    named = cfg.replace(lr_batch=256)
    assert placement.on_device(named, torch.device("cuda:0")).lr_batch == 256


def test_trials_per_gpu_follow_cores_and_memory():
    small = placement.trial_bytes(6040, 3706, 64, (), "gmf")
    assert placement.trials_per_gpu(16, 1, 140 << 30, small) == placement.MAX_TRIALS_PER_GPU
    assert placement.trials_per_gpu(2, 1, 140 << 30, small) == 2  # two cores feed two
    assert placement.trials_per_gpu(16, 2, None, small) == 4
    assert placement.trials_per_gpu(16, 1, 4 << 30, small) == 1  # memory bounds it
    assert placement.trials_per_gpu(0.5, 1, None, small) == 1  # never below one
    wide = placement.trial_bytes(138_493, 26_744, 0, (1024, 512, 256), "mlp")
    assert wide > placement.trial_bytes(6040, 3706, 0, (1024, 512, 256), "mlp")


def chain_files(folder: Path, resources: str = "resources: {cpu: 1}") -> Path:
    ratings = write_dat(folder / "ratings.dat", make_ratings(num_users=40, num_items=150))
    (folder / "gmf.yaml").write_text(
        f"model: gmf\ndata: {ratings}\nparams: {{factors: {{choice: [4, 8]}}, batch_size: 64, "
        f"lr: 0.01}}\nnum_samples: 2\nmax_epochs: 1\n{resources}\nscheduler: {{type: none}}\n")
    return folder / "gmf.yaml"


def test_a_space_without_gpu_shares_the_gpus_ray_sees(tmp_path, capsys):
    chain = spaces.load_chain(chain_files(tmp_path))
    have = {"CPU": 16, "GPU": 1}
    settled = cluster.check_resources(chain, have, (40, 150), gpu_bytes=140 << 30)
    assert settled[0].gpu == 1 / placement.MAX_TRIALS_PER_GPU
    assert "4 trial(s) share each of 1 GPU(s)" in capsys.readouterr().out
    two_cores = cluster.check_resources(chain, {"CPU": 2, "GPU": 1}, (40, 150), 140 << 30)
    assert two_cores[0].gpu == 0.5
    # --gpus 0: a Ray without GPUs runs CPU trials
    assert cluster.check_resources(chain, {"CPU": 16}, (40, 150))[0].gpu == 0.0
    # a space that says gpu: 0 keeps CPU trials beside GPUs
    cpu_only = spaces.load_chain(chain_files(tmp_path, "resources: {cpu: 1, gpu: 0}"))
    assert cluster.check_resources(cpu_only, have, (40, 150), 140 << 30)[0].gpu == 0.0


def test_gpus_asked_for_where_there_are_none_are_refused_in_one_line(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(NcfError, match=r"--gpus 1: torch .* sees 0 CUDA device"):
        search.run_chain(chain_files(tmp_path), results_dir=tmp_path / "r", gpus=1)
    assert not ray.is_initialized()  # refused before Ray started
    asks = spaces.load_chain(chain_files(tmp_path, "resources: {cpu: 1, gpu: 0.5}"))
    with pytest.raises(NcfError, match=r"resources.gpu=0.5 per trial, but the Ray cluster has 0"):
        cluster.check_resources(asks, {"CPU": 4}, (40, 150))


def record_placement(config: dict) -> None:
    """A trial that reports what it was granted and what it chose, then holds its slot
    a moment so that trials overlap."""
    import time

    grant = placement.Grant.current()
    try:
        device = str(placement.trial_device())
    except NcfError as exc:
        device = f"refused: {exc}"
    time.sleep(config["hold"])
    tune.report({"gpu_ids": ",".join(grant.gpu_ids), "visible": str(grant.visible),
                 "visible_after": str(os.environ.get("CUDA_VISIBLE_DEVICES")),
                 "device": device, "cuda_initialised": torch.cuda.is_initialized(),
                 "pid": os.getpid()})


@pytest.fixture(scope="module")
def ray_with_declared_gpus():
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
                 [str(TESTS), str(TESTS.parent)])}})
    yield
    ray.shutdown()


def run_trials(tmp_path: Path, resources: dict, n: int = 2) -> list[dict]:
    tuner = tune.Tuner(
        tune.with_resources(record_placement, resources),
        param_space={"hold": 2.0, "i": tune.grid_search(list(range(n)))},
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0))
    grid = tuner.fit()
    assert grid.num_errors == 0
    return [r.metrics for r in grid]


def test_trials_run_on_the_gpus_ray_granted_and_cpu_trials_never_start_cuda(
        ray_with_declared_gpus, tmp_path):
    gpu_trials = run_trials(tmp_path / "g", {"cpu": 1, "gpu": 1})
    # two trials at once, one GPU each: each sees only its own, as cuda:0
    assert sorted(t["gpu_ids"] for t in gpu_trials) == ["0", "1"]
    assert all(t["visible"] == t["gpu_ids"] for t in gpu_trials)
    # no CUDA in torch here: a granted GPU is refused in one line, not run on the CPU
    assert all(t["device"].startswith("refused: Ray granted this trial GPU")
               for t in gpu_trials)

    cpu_trials = run_trials(tmp_path / "c", {"cpu": 1, "gpu": 0})
    for t in cpu_trials:
        assert t["gpu_ids"] == "" and t["device"] == "cpu"
        assert t["visible_after"] == ""  # every GPU hidden from this trial's process
        assert t["cuda_initialised"] is False


def test_the_real_trainable_refuses_a_gpu_torch_cannot_reach(ray_with_declared_gpus, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from ncf_tune import data

    split = data.prepare(str(write_dat(tmp_path / "r.dat", make_ratings(40, 150))))
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(train_ncf, data=split), {"cpu": 1, "gpu": 1}),
        param_space={"model": "gmf", "factors": 4, "epochs": 1, "batch_size": 64},
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=0)))
    grid = tuner.fit()
    assert grid.num_errors == 1
    assert "has no CUDA" in str(grid[0].error)
