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
    # which pays on CPUs where updates are overhead-bound (small networks; measured in docs/speed.md). The first updates
    # of each phase compile (each session and after each rollback); the same function up to the rounding of its
    # precision (float32; under bf16 autocast fused intermediates may stay float32)
    compile_update: bool = False

    def __post_init__(self):
        check_fields(self, "execution", {})  # the Literal choices of amp, act_precision and cpu_matmul
        for name in ("cuda_graphs", "compile_update"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"execution {name}={getattr(self, name)!r}: expected true or false")
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
