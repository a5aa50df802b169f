"""A training step replayed as CUDA graphs, trusted only after it matched the eager step.

`GraphedStep(step, state, ...)` wraps `step(key, *inputs) -> metrics`, a function of device tensors only (no
host synchronisation, no random draws: those are made eagerly and passed in), into one CUDA graph per `key`
(e.g. an update with and one without the delayed policy step). For each key:

  1. the first `warmup` calls run eagerly (real steps; on a side stream on CUDA), which creates the optimiser
     state and lets cuBLAS pick its kernels before capture;
  2. the next call captures the graph (capture runs nothing) and then checks it: from the training state S
     (`state()`: every parameter, buffer and optimiser-state tensor) it replays the graph, giving state G and
     metrics m_G; it restores S in place, runs the eager step on the same inputs, giving E and m_E; and
     compares G with E and m_G with m_E. The run continues from E: the check step is exactly the eager step,
     whatever the graph did, so a run's numbers (and its random streams, drawn once outside) do not depend on
     whether or when it checked;
  3. later calls copy the inputs into the graph's static tensors and replay it: one launch instead of the
     step's hundreds of kernel launches and their Python overhead. Each graph has its own memory pool; its
     metrics are copied out of the pool after every replay.

The comparison, per state tensor t:   ||G_t - E_t|| / max(||G_t - S_t||, ||E_t - S_t||)
(the difference of the two updates relative to the larger of them; 0 when neither changed t), and per metric
|m_G - m_E| / max(|m_G|, |m_E|, 1). A graph that skips a tensor's update scores 1 on it, one that applies it
twice 1/2, a stale input or a constant baked in at capture O(1); rounding differences between two orders of
the same floating-point sums score near the precision's unit roundoff. Beyond `rtol` (see `tolerance`) the
graph is dropped: the step warns, and it and every later step run eagerly. A capture or replay error does the
same. `report()` says what was decided and the measured differences, as plain data for a run's manifest.

`capture(run) -> (replay, output)` records `run`; `capture_cuda_graph` is the real one, `eager_capture` a
stand-in that re-runs `run` on each replay, so that all of the above runs (and is tested) on CPUs; a test can
also pass a capture whose replay goes wrong, to exercise the fallback.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import nn

# The tolerances of the graph check (max relative difference, see the module docstring). A graph replays the
# kernels the eager step launches, so the two normally agree bit for bit; these allow for a different kernel
# (accumulation order) chosen inside and outside a capture. float32's unit roundoff is 6e-8: an order change
# perturbs a gradient by ~1e-6 relative and Adam's step by as much, so 1e-3 leaves a margin of 100x and more
# while any real fault scores >= ~0.1. bf16 keeps 8 significant bits (unit roundoff 2^-9 = 2e-3): one rounding
# flipped by a different order changes a product by up to 2^-8 = 4e-3 and such changes compound over the update's
# chain of matmuls to ~1e-2 in the worst tensor, so 5e-2 sits above that and still 2-20x below a real fault.
FLOAT32_RTOL = 1e-3
BF16_RTOL = 5e-2


def tolerance(bf16_autocast: bool) -> float:
    """The graph check's rtol for a step run in float32 or under bf16 autocast."""
    return BF16_RTOL if bf16_autocast else FLOAT32_RTOL


def capture_cuda_graph(run: Callable[[], torch.Tensor]):
    """Capture `run` as a CUDA graph: (replay, output), output() the tensor `run` returned (in the graph's pool)."""
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        flat = run()
    return graph.replay, lambda: flat


def eager_capture(run: Callable[[], torch.Tensor]):
    """A stand-in for CUDA-graph capture that re-runs `run` eagerly on each replay (tests on CPU)."""
    box = {}

    def replay():
        box["flat"] = run()

    return replay, lambda: box["flat"]


def training_state(
    modules: dict[str, nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> dict[str, torch.Tensor]:
    """Every tensor a training step may change, by name: parameters and buffers of `modules`, and the state of
    `optimizers` (named by parameter group and position, as Optimizer.state_dict numbers them)."""
    out = {f"{name}.{k}": t for name, m in modules.items() for k, t in m.state_dict(keep_vars=True).items()}
    for name, opt in optimizers.items():
        for gi, group in enumerate(opt.param_groups):
            for pi, p in enumerate(group["params"]):
                for k, v in opt.state.get(p, {}).items():
                    if isinstance(v, torch.Tensor):
                        out[f"{name}.{gi}.{pi}.{k}"] = v
    return out


def _tree_map(fn, tree):
    """fn on every tensor of a nested tuple / namedtuple / list / dict, keeping the structure."""
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(_tree_map(fn, v) for v in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(_tree_map(fn, v) for v in tree)
    raise TypeError(f"graphed step inputs must be tensors in tuples, lists or dicts, got {type(tree).__name__}")


def _leaves(tree) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    _tree_map(out.append, tree)
    return out


def _finite_or_str(x: float):
    return x if math.isfinite(x) else str(x)  # manifests are JSON: no NaN/Infinity literals


def _abs_diff(g: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """|g - e| in float64; NaN in both is agreement, NaN in one is an infinite difference."""
    g, e = g.detach().double(), e.detach().double()
    return (g - e).abs().masked_fill(g.isnan() & e.isnan(), 0.0).nan_to_num(nan=math.inf)


def _ratio(num: float, den: float) -> float:
    return 0.0 if num == 0 else (num / den if den > 0 else math.inf)


def compare_steps(before: dict, graph_state: dict, eager_state: dict, graph_metrics: dict, eager_metrics: dict) -> dict:
    """The differences between a graphed and an eager step from the same state `before` (see the module
    docstring): the largest relative and absolute difference over state tensors and over metrics, and where."""
    out = {
        "max_rel_state_diff": 0.0,
        "worst_state": None,
        "max_abs_state_diff": 0.0,
        "max_rel_metric_diff": 0.0,
        "worst_metric": None,
        "max_abs_metric_diff": 0.0,
    }
    for kind, g_all, e_all in (("state", graph_state, eager_state), ("metric", graph_metrics, eager_metrics)):
        if g_all.keys() != e_all.keys():  # the two steps did not even produce the same things
            out.update(
                {
                    f"max_rel_{kind}_diff": math.inf,
                    f"worst_{kind}": f"not in both: {sorted(map(str, g_all.keys() ^ e_all.keys()))}",
                }
            )
            continue
        for name in g_all:
            g, e = g_all[name].detach(), e_all[name].detach()
            d = _abs_diff(g, e)
            if not d.numel():
                continue
            if kind == "state":  # the difference of the two updates relative to the larger update
                s = before[name].detach().double()
                update_norm = max(float(torch.linalg.vector_norm(x.double() - s)) for x in (g, e))
                rel = _ratio(float(torch.linalg.vector_norm(d)), update_norm)
            else:  # metrics are losses and values, O(1) and up: relative to max(|value|, 1)
                rel = _ratio(float(d.max()), max(float(g.abs().max()), float(e.abs().max()), 1.0))
            out[f"max_abs_{kind}_diff"] = max(out[f"max_abs_{kind}_diff"], float(d.max()))
            if not rel <= out[f"max_rel_{kind}_diff"]:  # NaN too
                out.update({f"max_rel_{kind}_diff": rel if rel == rel else math.inf, f"worst_{kind}": name})
    return out


class GraphedStep:
    """`step(key, *inputs) -> dict of metric tensors` replayed as one CUDA graph per key, each checked against the
    eager step before it is used (see the module docstring). `state()` names every tensor the step changes."""

    def __init__(
        self,
        step: Callable[..., dict[str, torch.Tensor]],
        state: Callable[[], dict[str, torch.Tensor]],
        device: torch.device,
        warmup: int,
        rtol: float,
        capture=None,
        name: str = "update",
    ):
        if warmup < 1:
            raise ValueError(
                f"graph warm-up of {warmup} eager steps: at least 1 is needed (it creates the optimiser "
                "state the graph must point at)"
            )
        self.step, self.state, self.device, self.warmup, self.rtol = step, state, torch.device(device), warmup, rtol
        self.capture = capture or capture_cuda_graph
        self.name = name
        self.off_reason: str | None = None  # set once a graph failed: every later step runs eagerly
        self.checks: dict[str, dict] = {}  # per key: the latest check's differences and verdict
        self.reset()

    def reset(self) -> None:
        """Forget the graphs (the state tensors they point at were replaced, e.g. by loading a checkpoint): each key
        warms up, captures and checks again. A fallback decision stands."""
        self.graphs: dict = {}
        self.eager_done: dict = {}

    def report(self) -> dict:
        """{"cuda_graphs": "on" | "off: <reason>" | "pending: <why>", "graph_check": {...}} as plain data."""
        if self.off_reason is not None:
            status = f"off: {self.off_reason}"
        elif any(c["passed"] for c in self.checks.values()):
            status = "on"
        else:
            status = f"pending: no graph checked yet (each is captured after {self.warmup} eager steps of its kind)"
        return {
            "cuda_graphs": status,
            "graph_check": {"rtol": self.rtol, "phases": {k: dict(v) for k, v in self.checks.items()}},
        }

    def __call__(self, key, *inputs) -> dict[str, torch.Tensor]:
        if self.off_reason is not None:
            return self.step(key, *inputs)
        if key in self.graphs:
            return self._replay(key, inputs)
        if self.eager_done.get(key, 0) < self.warmup:
            self.eager_done[key] = self.eager_done.get(key, 0) + 1
            return self._warmup(key, inputs)
        try:
            self._capture(key, inputs)
        except RuntimeError as exc:  # capture runs no kernels: the eager step below is this step
            return self._fall_back(f"capture failed ({exc})", key, inputs)
        return self._checked(key, inputs)

    # ------------------------------------------------------------------------------------------------ internals
    def _fall_back(self, reason: str, key, inputs) -> dict[str, torch.Tensor]:
        self.off_reason = reason
        self.graphs = {}
        warnings.warn(
            f"{self.name}: CUDA graphs off, {reason}; continuing with eager steps "
            "(set execution.cuda_graphs=false to skip the attempt)",
            RuntimeWarning,
            stacklevel=3,
        )
        return self.step(key, *inputs)

    def _warmup(self, key, inputs):
        if self.device.type != "cuda":
            return self.step(key, *inputs)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            metrics = self.step(key, *inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        return metrics

    def _capture(self, key, inputs) -> None:
        static = _tree_map(lambda x: x.clone(), inputs)
        layout: list[tuple[str, torch.Size]] = []

        def run() -> torch.Tensor:
            metrics = self.step(key, *static)
            layout[:] = [(k, v.shape) for k, v in metrics.items()]
            return torch.cat([v.detach().float().reshape(-1) for v in metrics.values()])  # one copy out per replay

        replay, output = self.capture(run)
        self.graphs[key] = (replay, output, static, layout)

    def _replay(self, key, inputs) -> dict[str, torch.Tensor]:
        replay, output, static, layout = self.graphs[key]
        for dst, src in zip(_leaves(static), _leaves(inputs), strict=True):
            dst.copy_(src)
        replay()
        flat = output().clone()  # out of the graph's pool: the next replay overwrites it
        sizes = [math.prod(shape) for _, shape in layout]
        return {k: v.view(shape) for (k, shape), v in zip(layout, flat.split(sizes))}

    def _checked(self, key, inputs) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            before = {k: v.detach().clone() for k, v in self.state().items()}
        try:
            graph_metrics = self._replay(key, inputs)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)  # a replay's asynchronous errors surface here, not later
            with torch.no_grad():
                graph_state = {k: v.detach().clone() for k, v in self.state().items()}
        except RuntimeError as exc:
            self._restore(before)
            return self._fall_back(f"replay failed ({exc})", key, inputs)
        self._restore(before)
        eager_metrics = self.step(key, *inputs)  # this step's update: the run continues from the eager result
        with torch.no_grad():
            diffs = compare_steps(before, graph_state, self.state(), graph_metrics, eager_metrics)
        worst = max(diffs["max_rel_state_diff"], diffs["max_rel_metric_diff"])
        passed = worst <= self.rtol  # NaN compares False: fails
        checks = self.checks.get(str(key), {}).get("checks", 0) + 1
        self.checks[str(key)] = {
            **{k: _finite_or_str(v) if isinstance(v, float) else v for k, v in diffs.items()},
            "passed": passed,
            "checks": checks,
        }
        if not passed:
            in_state = diffs["max_rel_state_diff"] >= diffs["max_rel_metric_diff"]
            where = diffs["worst_state"] if in_state else diffs["worst_metric"]
            self.off_reason = (
                f"graphed and eager {self.name} differ by {worst:.3g} (relative, in {where}; tolerance {self.rtol:g})"
            )
            self.graphs = {}
            warnings.warn(
                f"{self.name}: CUDA graphs off, {self.off_reason}; continuing with eager steps",
                RuntimeWarning,
                stacklevel=2,
            )
        return eager_metrics

    def _restore(self, saved: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, v in self.state().items():
                if k in saved:
                    v.copy_(saved[k])  # in place: the graphs point at these tensors


# ---------------------------------------------------------------------------------------- for agents using graphs
def graph_ready_adam(params, lr: float, capturable: bool) -> torch.optim.Adam:
    """Fused Adam (one kernel per step instead of about a dozen per tensor, the same update rule); `capturable` keeps
    its step counter on the device, so that the step can live inside a CUDA graph."""
    opt = torch.optim.Adam(params, lr=lr, fused=True, capturable=capturable)
    opt._warned_capturable_if_run_uncaptured = True  # torch would warn once per optimiser about the eager warm-ups
    return opt


def keep_optimizer_settings(optimizers, capturable: bool) -> None:
    """After Optimizer.load_state_dict: put back this agent's own fused/capturable settings, which loading took from
    the file (a checkpoint written on a CPU, not capturable, would make every later capture fail; one written with
    graphs would ask a CPU for capturable steps), with `step` as a float32 tensor on the parameter's device."""
    for opt in optimizers:
        for group in opt.param_groups:
            group.update(fused=True, capturable=capturable)
            for p in group["params"]:
                st = opt.state.get(p)
                if st and "step" in st:
                    st["step"] = torch.as_tensor(st["step"], dtype=torch.float32).to(p.device)
