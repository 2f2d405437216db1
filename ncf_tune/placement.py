"""Which device a trial trains on, and how many trials share a GPU.

A trial touches only what Ray granted it. Ray grants GPUs by id (`ray.get_gpu_ids()`)
and narrows CUDA_VISIBLE_DEVICES to them for the worker, so the granted GPU is the
worker's `cuda:0`; a trial granted no GPU trains on the CPU and never initialises CUDA,
even where torch could see a GPU (Ray no longer hides GPUs from zero-GPU workers on
every release, and a CPU trial on GPU 0 would take a GPU that Ray gave someone else).

Where a space does not say `resources.gpu`, trials share the GPUs Ray sees: k trials a
GPU, k from the machine (CPU cores per GPU, GPU memory) and the stage's biggest model
(`trials_per_gpu`), at most MAX_TRIALS_PER_GPU. A trial on a GPU trains at GPU_BATCH rows
a batch when its config asks for fewer, with its learning rate scaled from the config's
batch (training.batch_lr), so that a GPU trains the model a CPU trains, faster.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from ncf_tune.config import TrainConfig
from ncf_tune.errors import NcfError

# Rows a batch on a GPU. At the CPU recipes' 4096 an H200 is launch-bound and no faster
# than 2 CPU cores; at 2^16 it is 14x faster (docs/PERFORMANCE.md), and the recipes
# train as well there with their lr scaled (docs/RESULTS.md, "Batch size").
GPU_BATCH = 1 << 16
# Trials sharing one GPU, at most: four GMF-64 trials shared an H200 at full speed
# (docs/PERFORMANCE.md, "Ray on the GPU"); more were not measured.
MAX_TRIALS_PER_GPU = 4
# What a trial holds on its GPU besides its parameters and optimiser state: the training
# positives, an epoch's samples (users, items, labels, their shuffled copies), the
# evaluation sets and the caching allocator's slack.
TRIAL_OVERHEAD_BYTES = 2 << 30
GPU_MEMORY_USED = 0.8  # of a GPU's memory that trials may plan on


@dataclass(frozen=True)
class Grant:
    """What Ray gave one trial: GPU ids (as Ray names them) and the worker's
    CUDA_VISIBLE_DEVICES (None: unset)."""

    gpu_ids: tuple[str, ...]
    visible: str | None

    @classmethod
    def current(cls) -> Grant:
        """This Ray worker's grant (call inside a trial)."""
        import ray  # a worker has it; keep this module importable without starting Ray

        return cls(tuple(str(g) for g in ray.get_gpu_ids()),
                   os.environ.get("CUDA_VISIBLE_DEVICES"))


def device_for(grant: Grant) -> str:
    """The device a trial with `grant` trains on: "cpu" without a GPU, else "cuda:N",
    N the granted GPU's place among the visible ones (0 when Ray narrowed visibility to
    it, as it does; the id itself when visibility was left unset)."""
    if not grant.gpu_ids:
        return "cpu"
    first = grant.gpu_ids[0]
    if grant.visible is None:
        return f"cuda:{first}"
    visible = [v.strip() for v in grant.visible.split(",") if v.strip()]
    if first not in visible:
        raise NcfError(f"Ray granted this trial GPU {first}, but CUDA_VISIBLE_DEVICES="
                       f"{grant.visible!r} hides it; unset CUDA_VISIBLE_DEVICES before "
                       "starting Ray")
    return f"cuda:{visible.index(first)}"


def trial_device(grant: Grant | None = None) -> torch.device:
    """The device this trial may use (see `device_for`). A CPU trial hides every GPU from
    CUDA for the rest of its process, so that nothing in it can initialise one; a GPU
    trial whose torch cannot reach its GPU is refused in one line."""
    grant = Grant.current() if grant is None else grant
    name = device_for(grant)
    if name == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # read by CUDA when (if ever) it starts
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise NcfError(f"Ray granted this trial GPU {grant.gpu_ids[0]}, but torch "
                       f"{torch.__version__} here has no CUDA; install a CUDA build of torch "
                       "on this node, or run the search with --gpus 0")
    device = torch.device(name)
    torch.cuda.set_device(device)
    return device


def on_device(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """`cfg` as a trial on `device` trains it: on a GPU at least GPU_BATCH rows a batch,
    lr kept as chosen at the config's own batch (`lr_batch`)."""
    if device.type != "cuda" or cfg.batch_size >= GPU_BATCH:
        return cfg
    return cfg.replace(batch_size=GPU_BATCH, lr_batch=cfg.lr_batch or cfg.batch_size)


def trial_bytes(num_users: int, num_items: int, factors: int, layers: tuple[int, ...],
                model: str) -> int:
    """GPU memory one trial of this shape plans on: fp32 weights, their gradients and
    Adam's two moments (16 bytes a parameter), plus TRIAL_OVERHEAD_BYTES."""
    params = 0
    if model in ("gmf", "neumf"):
        params += (num_users + num_items) * factors
    if model in ("mlp", "neumf"):
        params += (num_users + num_items) * layers[0] // 2
        params += sum(a * b + b for a, b in zip(layers[:-1], layers[1:], strict=True))
    return 16 * params + TRIAL_OVERHEAD_BYTES


def trials_per_gpu(cpus_per_gpu: float, cpu_per_trial: float, gpu_bytes: int | None,
                   bytes_per_trial: int) -> int:
    """How many trials share one GPU: as many as the CPU cores beside it feed (each
    trial keeps `cpu_per_trial` cores) and its memory holds, at most MAX_TRIALS_PER_GPU,
    at least 1. gpu_bytes None: unknown here (a cluster's GPUs, seen from a driver
    without one), so memory does not limit."""
    k = min(MAX_TRIALS_PER_GPU, math.floor(cpus_per_gpu / max(cpu_per_trial, 1e-9)))
    if gpu_bytes is not None:
        k = min(k, math.floor(GPU_MEMORY_USED * gpu_bytes / bytes_per_trial))
    return max(1, k)


def local_gpu_bytes() -> int | None:
    """Memory of this machine's smallest CUDA device, or None when torch sees none."""
    if not torch.cuda.is_available():
        return None
    return min(torch.cuda.get_device_properties(i).total_memory
               for i in range(torch.cuda.device_count()))


def check_local_gpus(gpus: int | None) -> None:
    """Refuse --gpus N for a Ray started here when torch sees fewer CUDA devices: Ray
    would declare GPUs no trial can use."""
    if not gpus:
        return
    seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus > seen:
        raise NcfError(f"--gpus {gpus}: torch {torch.__version__} sees {seen} CUDA device(s) on "
                       f"this machine; pass --gpus {seen} or leave --gpus out")
