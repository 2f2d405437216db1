"""torch.compile for the training steps: when it is used, and the eager fallback.

A training step on a CPU is a dozen small ops on a few MB of rows; eager PyTorch spends
most of it dispatching them and writing their intermediates out. Inductor fuses a step
into a few loops of generated C++ (GMF-64 as MF: about 8x faster a step on one core;
benchmarks/epoch_speed.py). Compiling costs seconds once per process and shape, less
when inductor's on-disk cache (/tmp/torchinductor_$USER, shared by every process of
the machine) already holds the step, so it is used where a run has enough steps to
pay it back.

The switch, environment variable NCF_TUNE_COMPILE:
    auto  (default) compile on the CPU when a run has at least MIN_STEPS full batches
          (MIN_TOWER_STEPS for a model with a tower)
    on    compile whatever the run's length, on the CPU and on CUDA (tests, benchmarks)
    off   never compile: the eager steps, which train the same weights, bit for bit, as
          the engine did before fused steps
auto and on also make Adam on the CPU torch's fused kernel (training.build_optimizer),
which needs no compiling.
On CUDA, `on` compiles the same steps for the GPU (inductor's Triton kernels); `auto`
keeps CUDA runs eager until that is measured on a GPU (benchmarks/gpu_check.sh).

Determinism: the generated loops run on one thread (`cpp.threads`: 1), so each row's
update is added in batch order, as the eager index_add_ does; the same seed gives the
same weights. Matrix products inside a step still use torch's threads.

Where compiling fails (no C++ compiler, an op inductor cannot lower), the step runs
eagerly from then on in this process and one line on stderr says why.
"""

from __future__ import annotations

import os
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ncf_tune.errors import NcfError

SWITCH = "NCF_TUNE_COMPILE"
MODES = ("auto", "on", "off")
# Compiling a step takes about 11 s with an empty cache and 2-4 s from it (2-core
# EPYC, one thread); fused, a step saves about 1.7 ms a batch for GMF-64 as MF and 16 ms
# for MLP 512-256-128 (benchmarks/epoch_speed.py). So MF pays back its compiling after
# a few thousand batches, a tower after several hundred. ML-1M at batch 4096: 2,184
# batches an epoch: one epoch of a NeuMF is worth compiling, one of GMF is not.
MIN_STEPS = 5000
MIN_TOWER_STEPS = 1000
# Compiled variants kept per step (factors, batch sizes, towers: one each). A search
# process that runs trial after trial (Ray's reuse_actors) meets many; torch's default
# of 8 would then run the rest eagerly.
MAX_VARIANTS = 64
_OPTIONS = {"cpp.threads": 1}  # rows added in order: deterministic (see above)


def mode() -> str:
    """The switch's value: "auto" (unset), "on" or "off"."""
    value = os.environ.get(SWITCH, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise NcfError(f"environment variable {SWITCH}={value!r} is not one of "
                       f"{', '.join(MODES)}; unset it for auto")
    return value


def wanted(device: torch.device, steps: int, tower: bool = False) -> bool:
    """Whether a run of `steps` full batches on `device` should use compiled steps;
    `tower`: the model has one (MLP, NeuMF), whose steps pay back compiling sooner."""
    chosen = mode()
    if chosen == "off" or device.type not in ("cpu", "cuda"):
        return False
    if device.type == "cuda":  # unmeasured there: on request only (gpu_check.sh times it)
        return chosen == "on"
    return chosen == "on" or steps >= (MIN_TOWER_STEPS if tower else MIN_STEPS)


class Compiled:
    """`fn` compiled by inductor for fixed shapes (a call with new shapes compiles a new
    variant; callers keep a short last batch out). Where compiling fails, calls run `fn`
    eagerly for the rest of the process.

    `compile_seconds`: the wall time of the calls that compiled (their one run included).
    """

    def __init__(self, fn: Callable[..., Any], what: str, varying: tuple[int, ...] = ()
                 ) -> None:
        """`varying`: the positions of tensor arguments whose first dimension changes
        from call to call; one variant serves all their lengths."""
        self.fn = fn
        self.what = what
        self.varying = varying
        self.compiled = torch.compile(fn, fullgraph=True, dynamic=False, options=_OPTIONS)
        # On CUDA a step is a few kernels a batch, each launched from Python: replayed as
        # one CUDA graph ("reduce-overhead") where its shapes are fixed.
        self.compiled_cuda = torch.compile(fn, fullgraph=True, dynamic=False,
                                           mode="reduce-overhead")
        self.failed = False
        self.compile_seconds = 0.0
        self._seen: set[tuple] = set()

    def __call__(self, *args: Any) -> Any:
        if self.failed:
            return self.fn(*args)
        for i in self.varying:
            torch._dynamo.mark_dynamic(args[i], 0)
        key = _signature(args, self.varying)
        compiled = self.compiled_cuda if _on_cuda(args) else self.compiled
        if key in self._seen:
            return compiled(*args)
        t0 = time.perf_counter()
        try:
            with torch._dynamo.config.patch(recompile_limit=MAX_VARIANTS):
                out = compiled(*args)
        except Exception as exc:  # noqa: BLE001 - any failure to compile: run eagerly
            self.failed = True
            print(f"ncf_tune: {self.what} runs eagerly, torch.compile failed: "
                  f"{_first_line(exc)}", file=sys.stderr, flush=True)
            return self.fn(*args)
        self.compile_seconds += time.perf_counter() - t0
        self._seen.add(key)
        return out


def _on_cuda(args: tuple) -> bool:
    """Whether the step's tensors (or its module's) live on a CUDA device."""
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device.type == "cuda"
        if isinstance(a, nn.Module):
            return next(a.parameters()).device.type == "cuda"
    return False


def _signature(args: tuple, varying: tuple[int, ...] = ()) -> tuple:
    """What makes inductor compile a new variant: shapes (but the first dimension of
    the `varying` arguments) and dtypes, None against a tensor, flags, and for a module
    `_module_signature` and its training mode."""
    out = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            shape = tuple(a.shape)[1:] if i in varying else tuple(a.shape)
            out.append((shape, a.dtype, a.device))
        elif isinstance(a, nn.Module):
            if a not in _modules:
                _modules[a] = _module_signature(a)
            out.append((_modules[a], a.training))
        else:
            out.append(a if a is None or isinstance(a, (bool, int, str)) else type(a))
    return tuple(out)


def _module_signature(module: nn.Module) -> tuple:
    """Its parameters' shapes and its (and its submodules') plain settings, such as a
    dropout rate: what a module keeps for life (computed once a module: a step is short)."""
    settings = tuple((type(m), tuple((k, v) for k, v in vars(m).items()
                                     if k != "training" and isinstance(v, (bool, int, float, str))))
                     for m in module.modules())
    return settings, tuple((tuple(p.shape), p.requires_grad) for p in module.parameters())


_modules: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return f"{type(exc).__name__}: {text}"[:300]
