"""Where a search runs: one search per experiment folder (a lock), Ray started or joined
for the length of the search and left as it was found, trials' resources settled.

`ray_session` is the one way the search touches process-wide state (Ray, Tune's
environment variables, the SIGTERM handler), and it puts every piece back when the
search ends, so that `run_chain` can be called from a notebook or another program.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from ncf_tune import placement, spaces
from ncf_tune.errors import NcfError

MIN_FREE_BYTES = 256 * 2**20  # checkpoints of a few trials; refuse before trials start
# The Ray releases CI tests (pyproject.toml says the same): the search leans on Tune
# interfaces that moved between releases (tune.report, RunConfig, restoring a Tuner's
# TuneConfig, the token-authentication logger), so another Ray is refused up front.
RAY_VERSIONS = ">=2.60,<2.61"
# Ray logs a WARNING at every local start that token authentication is on (its
# default, which stays on): noise on a console that is otherwise the search's.
AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"

# Read by Ray Tune while a search runs: a readable console, trials started side by side.
TUNE_ENV = {
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_DEDUP_LOGS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0: no tables, no banners
    # Tune's own Ctrl-C handler stops every trial and marks it finished, so a resumed
    # search would not rerun them. Without it, Ctrl-C (and SIGTERM, below) leave Tune's
    # state as its last snapshot, just like a killed driver, and --resume picks up there.
    "TUNE_DISABLE_SIGINT_HANDLER": "1",
    # Tune logs each failed trial as an ERROR with its whole traceback; the console
    # prints one line of its own instead, with the traceback's path (console.py).
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",
}


class experiment_lock:
    """One search per experiment folder at a time (an flock on <experiment>/.lock); the
    folder must be writable and have room for checkpoints."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __enter__(self) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.handle = open(self.folder / ".lock", "w")  # noqa: SIM115
        except OSError as exc:
            raise NcfError(f"{self.folder}: cannot write results here ({exc.strerror}); pass "
                           "--results DIR with a writable folder") from None
        free = shutil.disk_usage(self.folder).free
        if free < MIN_FREE_BYTES:
            self.handle.close()
            raise NcfError(f"{self.folder}: only {free / 2**20:.0f} MiB free; a search needs at "
                           f"least {MIN_FREE_BYTES / 2**20:.0f} MiB for checkpoints: free some "
                           "space or pass --results DIR on another disk")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise NcfError(f"{self.folder}: another search is writing to this experiment; "
                           "wait for it, or pass --experiment NAME to use another folder") from None

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


@contextlib.contextmanager
def ray_session(address: str | None, cpus: int | None, gpus: int | None) -> Iterator[None]:
    """Ray for the length of a search: started here (or joined, with `address`) unless it
    is already running, and shut down afterwards only if started here. Tune's
    environment variables and the SIGTERM handler are set for the search and restored."""
    saved_env = {k: os.environ.get(k) for k in (*TUNE_ENV, "TUNE_MAX_PENDING_TRIALS_PG")}
    for key, value in TUNE_ENV.items():
        os.environ.setdefault(key, value)
    saved_term = signal.getsignal(signal.SIGTERM)
    started = False
    try:
        started = _start_ray(address, cpus, gpus)
        # ray.init puts in a SIGTERM handler that aborts the process; ours stops the
        # search like Ctrl-C does, so that a scheduler ending the job leaves a resumable
        # search.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
        slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
        # By default Tune keeps one trial pending at a time with a searcher: let every
        # slot start one (the stage's max_concurrent caps how many run).
        os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", str(slots))
        yield
    finally:
        if started:
            shutdown_ray(timeout=30)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, saved_term)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def shutdown_ray(timeout: float) -> None:
    """ray.shutdown(), but never wait longer than `timeout` for it."""
    stopper = threading.Thread(target=ray.shutdown, daemon=True)
    stopper.start()
    stopper.join(timeout)


def check_ray_version(version: str | None = None) -> None:
    """Refuse (one line) a Ray outside RAY_VERSIONS; version: default the installed one."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    version = ray.__version__ if version is None else version
    try:
        ok = Version(version) in SpecifierSet(RAY_VERSIONS)
    except InvalidVersion:
        ok = False
    if not ok:
        raise NcfError(f"ray {version} is installed; ncf_tune is tested with ray{RAY_VERSIONS} "
                       f"and uses Tune interfaces that moved between releases: pip install "
                       f"'ray[tune]{RAY_VERSIONS}'")


@contextlib.contextmanager
def _quiet_auth_warning() -> Iterator[None]:
    """Ray's token-authentication WARNING off the console while Ray starts; the
    protection itself is left as Ray sets it (on by default)."""
    log = logging.getLogger(AUTH_LOGGER)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _start_ray(address: str | None, cpus: int | None, gpus: int | None) -> bool:
    """Start (or join) Ray unless it is running; True when this call started it."""
    if ray.is_initialized():
        return False
    package = Path(__file__).resolve().parent
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                              "log_to_driver": False}  # trial failures: see console.py
    if address:
        # Workers on other machines get this package itself, whatever is installed there.
        kwargs["address"] = address
        kwargs["runtime_env"] = {"py_modules": [str(package)]}
    else:
        # Local workers import ncf_tune (and trainables defined beside the caller's
        # code) from the driver's path, installed or not.
        path = os.pathsep.join(p for p in (str(package.parent), os.environ.get("PYTHONPATH"))
                               if p)
        kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        kwargs.update(num_cpus=cpus, num_gpus=gpus)
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
            # The user turned Ray's protection off: one line of ours says what that means.
            print("ray: token authentication is off (RAY_AUTH_MODE=disabled): anyone who can "
                  "reach this machine's Ray ports can run code in the search; unset it to "
                  "turn it back on")
    with _quiet_auth_warning():
        ray.init(**kwargs)
    return True


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM (a scheduler ending the job) stops the search like Ctrl-C does."""
    raise KeyboardInterrupt


def check_resources(chain: list[spaces.Stage], have: dict[str, float] | None = None,
                    users_items: tuple[int, int] = (0, 0), gpu_bytes: int | None = None
                    ) -> list[spaces.Stage]:
    """Refuse a stage that asks for more per trial than the cluster has; settle gpu.

    A stage that does not say `resources.gpu` shares the cluster's GPUs when it has any:
    k trials a GPU (`placement.trials_per_gpu`, from the CPU cores per GPU, `gpu_bytes`
    per GPU (default: the smallest GPU this machine's torch sees) and the stage's biggest
    model on `users_items` users and items), printed once per stage; else it runs CPU
    trials. `--gpus 0` (a Ray without GPUs) keeps CPU trials. have: the cluster's
    resources (default: Ray's, as it runs now).
    """
    have = ray.cluster_resources() if have is None else have
    gpus, cpus = have.get("GPU", 0), have.get("CPU", 0)
    if gpus >= 1 and gpu_bytes is None:
        gpu_bytes = placement.local_gpu_bytes()  # None on a driver without a GPU
    settled = []
    for stage in chain:
        if stage.gpu is None:
            stage = dataclasses.replace(stage, gpu=0.0)
            if gpus >= 1:
                k = placement.trials_per_gpu(
                    cpus / gpus, stage.cpu, gpu_bytes,
                    placement.trial_bytes(*users_items, *_largest_shape(stage, chain)))
                stage = dataclasses.replace(stage, gpu=1.0 / k)
                print(f"[{stage.name}] {k} trial(s) share each of {gpus:g} GPU(s) ({stage.cpu:g} "
                      f"CPU + {stage.gpu:g} GPU a trial, batches of at least "
                      f"{placement.GPU_BATCH}); --gpus 0 for CPU trials")
        settled.append(stage)
        for name, want in (("cpu", stage.cpu), ("gpu", stage.gpu)):
            got = have.get(name.upper(), 0)
            if want > got:
                raise NcfError(f"{stage.path}: resources.{name}={want:g} per trial, but the Ray "
                               f"cluster has {got:g}; lower it (or --{name}s N, --address)")
    return settled


def _largest_shape(stage: spaces.Stage, chain: list[spaces.Stage]
                   ) -> tuple[int, tuple[int, ...], str]:
    """(factors, layers, model) of the stage's biggest config: the largest choice of each
    size; a NeuMF built from upstream stages, their biggest times pretrain_top."""
    def layers_of(value: object) -> tuple[int, ...]:
        return tuple(int(x) for x in str(value).strip("[]()").split(","))

    def biggest(s: spaces.Stage, name: str, default: object) -> object:
        p = s.params.get(name)
        if p is None:
            return default
        size = (lambda v: sum(layers_of(v))) if name == "layers" else int
        return max(spaces.extremes(p) or [p.args[0]], key=size)

    factors = int(biggest(stage, "factors", 8))
    layers = layers_of(biggest(stage, "layers", "64,32,16,8"))
    if stage.starts_pretrained:
        ups = {s.model: s for s in chain if s.path in stage.pretrain.values()}
        n = stage.pretrain_top
        if "gmf" in ups:
            factors = n * int(biggest(ups["gmf"], "factors", 8))
        if "mlp" in ups:
            layers = tuple(n * x for x in layers_of(biggest(ups["mlp"], "layers", "64,32,16,8")))
    return factors, layers, stage.model
