"""How an agent's numbers are computed on this machine: precision, CUDA graphs, the CPU matmul kernel.

These settings choose how the same training function is evaluated, not which function: the hyperparameters
(`agent.*`) say what is learned, an `Execution` (a run's `execution:` settings) says in what precision and with
which kernels. So they may differ between the sessions of one run: a run started on a GPU may resume on a CPU, with
or without CUDA graphs, and resuming never compares them (flowrl/config.py). Each session records the settings it
ran with in the run's manifest.json.

Two of them change the numbers, not only the speed: `amp` (bf16 autocast of the updates) and `act_precision`
(acting and evaluation). A session that uses another precision than the one before continues the same training
function with other rounding, so its results differ from an uninterrupted run's in the last digits and, as
training amplifies them, beyond (docs/run-format.md). `cuda_graphs`, `cpu_matmul` and `compile_update` compute the
same function to rounding; `graph_warmup` only delays the capture.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Literal

import torch

from flowrl.config import check_fields
from flowrl.cpu_kernels import resolve_cpu_matmul

# compile_update=auto compiles runs with at least this many updates: compilation takes ~5-60 s per session (inductor's
# on-disk cache cold or warm) and saves ~15-50% of every update on a CPU (docs/speed.md), so a run of this length or
# more gains minutes; shorter ones (tests, tutorials, the default study) stay eager
COMPILE_AUTO_MIN_UPDATES = 20_000


def planned_updates(steps: int, start_steps: int, updates_per_step: int) -> int:
    """The updates of a whole run (not of one session: every session of a run decides compile_update=auto alike)."""
    return max(0, steps - start_steps) * updates_per_step


def cxx_compiler() -> str | None:
    """The C++ compiler inductor's CPU backend calls (its `cpp.cxx` setting: $CXX, else g++, clang++ on macOS) where
    it is on PATH, else None."""
    import shutil

    from torch._inductor import config as inductor_config

    name = next((c for c in inductor_config.cpp.cxx if c), None)
    return name if name and shutil.which(name) else None


def decide_compile(setting, device: torch.device, updates: int | None) -> tuple[bool, str | None]:
    """Whether the update's losses run under torch.compile, and the line the run's manifest records (None: nothing
    to record, compile_update=false). `updates`: the run's planned updates (`planned_updates`), None where unknown
    (an agent built outside flowrl-train: benches, tests, notebooks)."""
    if setting is True:
        return True, "on: torch.compile (inductor) of the update's losses (products as inductor picks)"
    if setting is False:
        return False, None
    if device.type != "cpu":
        return False, f"off (auto): compile_update=auto compiles on CPUs only (device {device})"
    if updates is None:
        return False, "off (auto): the run's length is unknown here (set compile_update=true to compile)"
    if updates < COMPILE_AUTO_MIN_UPDATES:
        return False, (
            f"off (auto): {updates} updates planned, fewer than {COMPILE_AUTO_MIN_UPDATES}, so compiling would not pay"
        )
    compiler = cxx_compiler()
    if compiler is None:
        return False, "off (auto): no C++ compiler for inductor's CPU backend (install g++ or set CXX)"
    return True, f"on (auto): {updates} updates planned on a CPU; torch.compile (inductor, {compiler}) of the losses"


@dataclasses.dataclass
class Execution:
    # bf16 autocast of the updates: "auto" = on CUDA only (as the official code); "bf16" forces it, CPUs too
    amp: Literal["auto", "off", "bf16"] = "auto"
    # Acting and evaluation: float32, with TF32 matmuls on CUDA, as the official code acts (outside its autocast,
    # after torch.set_float32_matmul_precision("high")); "float32": IEEE float32 matmuls; "amp": under the updates'
    # autocast (bf16 where `amp` is on), what runs did before this key existed: their saved configs resume with it
    # (flowrl/config.py LEGACY_VALUES)
    act_precision: Literal["tf32", "float32", "amp"] = "tf32"
    # On CUDA, replay each update as a captured CUDA graph, checked against the eager update first (eager again if
    # they differ: flowrl/cuda_graphs.py); no effect on CPUs
    cuda_graphs: bool = True
    graph_warmup: int = 3  # eager updates per graph before it is captured (lazy init of optimiser state, cuBLAS)
    # Float32 CPU matmuls of the ensemble layers: oneDNN's GEMM or torch's batched matmul; "auto": oneDNN for network
    # calls whose largest layer is a large product (paper-size updates), batched matmul for small ones (acting,
    # small networks); x86-64 only. The same function up to rounding; no effect on GPUs or under autocast
    # (flowrl/cpu_kernels.py, docs/speed.md)
    cpu_matmul: Literal["auto", "onednn", "aten"] = "auto"
    # torch.compile (inductor) of the update's losses where it is not replayed as CUDA graphs: fewer, fused kernels,
    # which pays on CPUs where updates are overhead-bound (small networks; measured in docs/speed.md). The first
    # updates of each phase compile, once per session (rollbacks load into the same tensors); the same function up to
    # the rounding of its precision (float32; under bf16 autocast fused intermediates may stay float32). "auto": on
    # CPUs for runs of at least COMPILE_AUTO_MIN_UPDATES updates (where the seconds of compilation pay), off otherwise
    # (`decide_compile`)
    compile_update: Literal["auto", True, False] = "auto"

    def __post_init__(self):
        if not isinstance(self.cuda_graphs, bool):
            raise ValueError(f"execution cuda_graphs={self.cuda_graphs!r}: expected true or false")
        if not (isinstance(self.compile_update, bool) or self.compile_update == "auto"):  # not 1 / 0 either
            raise ValueError(f"execution compile_update={self.compile_update!r}: expected true, false or auto")
        check_fields(self, "execution", {})  # the Literal choices of amp, act_precision and cpu_matmul
        if self.graph_warmup < 1:
            raise ValueError(
                f"execution graph_warmup={self.graph_warmup!r}: at least 1 eager update is needed (it "
                "creates the optimiser state a graph must point at)"
            )
        if self.cpu_matmul == "onednn":  # on a torch without it this fails here, before a run writes anything ('auto'
            resolve_cpu_matmul(self.cpu_matmul)  # is resolved when the agent is built, at the run's thread count)

    def bf16(self, device: torch.device) -> bool:
        """Whether the updates run under bf16 autocast on `device`."""
        return self.amp == "bf16" or (self.amp == "auto" and device.type == "cuda")

    def graphed(self, device: torch.device) -> bool:
        """Whether the updates are to be replayed as CUDA graphs on `device`."""
        return self.cuda_graphs and device.type == "cuda"

    def autocast(self, device: torch.device):
        """The updates' precision: bf16 autocast where `bf16(device)`, else float32 as written."""
        if not self.bf16(device):
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    @contextlib.contextmanager
    def acting(self, device: torch.device):
        """Acting and evaluation in `act_precision`. On CUDA the float32 matmul precision is set for the call and
        restored after; on CPUs it is left alone (there "high" may let oneDNN multiply in reduced precision)."""
        if self.act_precision == "amp":
            with self.autocast(device):
                yield
            return
        if device.type != "cuda":
            yield
            return
        precision = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high" if self.act_precision == "tf32" else "highest")
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(precision)
