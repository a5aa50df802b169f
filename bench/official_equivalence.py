"""Check number by number that this repository's FlowRL update is the official one (github bytedance/FlowRL).

    python bench/official_equivalence.py --official PATH      # PATH: your own clone of bytedance/FlowRL

Nothing of the official code is copied here: its modules (model/algo.py, model/model.py, model/utils.py)
are imported from PATH at run time, on the CPU, and adapted from the outside without touching the files:
torch.compile is the identity while they are imported (its decorators then return the plain functions)
and `algo.compile_model` is set False; Policy_flow, which hard-codes `cuda:0` and `.cuda()`, is built
with no action space and then given the CPU device and the action scale/bias on the CPU; the official
agent runs with cuda=False, so its bf16 autocast is off and both sides compute in float32. wandb is only
imported by main.py, which is never imported (its defaults are read from the source text with `ast`).

Both implementations then start from the same weights (the official agent's own initialisation, copied
into ours), see the same replay batches and the same random draws, and run `--updates` updates (every
`target_update_interval`-th one with the delayed policy step and the soft target updates). The official
code draws from torch's global RNG: its modules' `torch` is replaced by a proxy that serves each
`randn_like` / `normal` / `rand` / `rand_like` call from a queue of tensors drawn here in advance, and
checks that the calls come in the order and shapes our update draws them (a_0 for flow matching, a_0 for
pi(s'), a_0 for pi(s), the flow-matching times t); ours gets the same tensors (clipped to [-1, 1], as
both clip) through `update_noise`. Before each update ours is set to the official parameters and Adam
moments, so every update is compared from one state (otherwise the few differences below that Adam
amplifies would carry into the next update); the moments are compared first, so a moment our optimiser
got wrong still shows. Recorded, per update, and compared:

  - every forward call of each network (critic, critic target, buffer critic, its target, V_b, the
    velocity field), call by call, and the sampled actions pi(s') and pi(s);
  - each loss (critic, buffer critic, V_b expectile, policy), the flow-matching weights w and the
    weighted flow-matching term w * MSE (official values taken from its GradScaler.scale calls and its
    `F.mse_loss` / weight clamp, ours from the metrics and the instance methods flow_weights /
    flow_matching_loss);
  - each optimiser's gradients as its step sees them, its Adam moments after the step, and every
    parameter after the update (optimiser steps, soft target updates; networks an update leaves alone
    must be unchanged on both sides);
then acting with fixed noise, in training and evaluation mode, on fresh observations.

Tolerance (float32 rounding). The two sides compute the same function with different summation orders
(per-member oneDNN or batched GEMMs against nn.Linear, fused against foreach Adam), so they agree to
float32 rounding, not bit for bit. Outputs, actions, losses, weights, gradients and moments pass when
max|ours - official| <= RTOL * max|official|, RTOL = 2e-5, i.e. 168 float32 ulps (2^-23) of the largest
value: rounding in a ten-layer network is a few ulps per layer, while a real difference in the algorithm
(a sign, a missing term, another tau, lambda placement, lr or expectile) moves these quantities by 1e-3
to 1 relative. Parameters: an update moves each by at most about lr, and Adam's m / sqrt(v) turns a
gradient that is itself at rounding level (near 0) into a step of up to lr of either sign, so for those
values the two sides may differ by up to 2 lr although both gradients agree to RTOL. Each parameter
therefore passes when |ours - official| <= ATOL + E, where E is the difference Adam makes of the two
gradients (computed in float64 from the official pre-step moments and both gradients; tau times that
for the soft-updated targets) and ATOL = RTOL_STEP * (the largest official change) + 4 ulps of the
largest parameter, RTOL_STEP = 1e-3. Prints one row per quantity and update, a summary and a verdict;
exit status 0 when every row passes, 1 when any exceeds its tolerance (or the two draw their noise
differently), 2 when PATH is not a usable official checkout.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import importlib
import math
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flowrl.agents.base import Batch, EnvSpec  # noqa: E402
from flowrl.agents.flowrl import FlowRL, FlowRLConfig  # noqa: E402

RTOL = 2e-5
RTOL_STEP = 1e-3
OFFICIAL_FILES = ("model/algo.py", "model/model.py", "model/utils.py", "utilis/default_config.py", "main.py")
PACKAGE = "_flowrl_official_model"  # the official model/ directory is imported as this package


class NotOfficialCheckout(Exception):
    """PATH is not a checkout of github bytedance/FlowRL this script can use."""


class DrawOrderError(Exception):
    """The official code drew random numbers in another order or shape than our update does."""


# ------------------------------------------------------------------------------------------- loading
def official_commit(path: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _no_compile(fn=None, **_kwargs):
    """torch.compile stand-in while the official modules are imported: the decorated function itself."""
    return fn if fn is not None else (lambda f: f)


def load_official(path: str | Path) -> types.SimpleNamespace:
    """Import the official model/ modules from `path`, adapted to run on the CPU, uncompiled."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise NotOfficialCheckout(
            f"--official {path}: no such directory. Clone the official code first: "
            "git clone https://github.com/bytedance/FlowRL"
        )
    missing = [f for f in OFFICIAL_FILES if not (path / f).is_file()]
    if missing:
        raise NotOfficialCheckout(
            f"--official {path} is not a checkout of github bytedance/FlowRL: it lacks "
            f"{', '.join(missing)}. Point --official at the directory holding model/algo.py "
            "(git clone https://github.com/bytedance/FlowRL)"
        )
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(path / "model")]
    sys.modules[PACKAGE] = package
    compile_ = torch.compile
    torch.compile = _no_compile
    try:
        algo = importlib.import_module(f"{PACKAGE}.algo")
        model = importlib.import_module(f"{PACKAGE}.model")
    except Exception as exc:  # noqa: BLE001 - anything the foreign module raises is reported as such
        raise NotOfficialCheckout(
            f"importing the official model/algo.py from {path} failed: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        torch.compile = compile_
    needed = {
        "algo": (algo, ("flowAC", "Policy_flow", "CFM_MIN", "CFM_MAX")),
        "model": (model, ("QNetwork", "ValueNetwork", "Policy_flow")),
    }
    lacking = [f"model/{m}.py: {a}" for m, (mod, attrs) in needed.items() for a in attrs if not hasattr(mod, a)]
    if lacking:
        raise NotOfficialCheckout(
            f"{path} does not look like the official FlowRL code this script knows "
            f"(missing {', '.join(lacking)}); it was written against commit "
            "e26279b331a7fb08668dc39d925ce2e9c82b2321"
        )
    algo.compile_model = False  # flowAC.__init__ would torch.compile five networks
    algo.Policy_flow = _cpu_policy_factory(model.Policy_flow)
    return types.SimpleNamespace(
        path=path, algo=algo, model=model, commit=official_commit(path), defaults=official_defaults(path)
    )


def _cpu_policy_factory(policy_cls):
    """Policy_flow on the CPU: built without an action space (the branch that calls .cuda()), then given the
    device and the action rescaling of `action_space` as CPU tensors."""

    def build(num_inputs, num_actions, hidden_dim, steps, action_space=None):
        policy = policy_cls(num_inputs, num_actions, hidden_dim, steps, None)
        policy.device = torch.device("cpu")
        if action_space is not None:
            low = np.asarray(action_space.low, dtype=np.float32)
            high = np.asarray(action_space.high, dtype=np.float32)
            policy.action_scale = torch.as_tensor((high - low) / 2.0)
            policy.action_bias = torch.as_tensor((high + low) / 2.0)
        return policy

    return build


def official_defaults(path: Path) -> dict:
    """The official run settings: utilis/default_config.py's dict and main.py's add_arg defaults, read as
    literals from the source (main.py logs into wandb when imported)."""
    out: dict = {}
    tree = ast.parse((path / "utilis" / "default_config.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Config" and node.args:
            out.update(ast.literal_eval(node.args[0]))
    for node in ast.walk(ast.parse((path / "main.py").read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_arg" and len(node.args) >= 2:
            with contextlib.suppress(ValueError):
                out[ast.literal_eval(node.args[0])] = ast.literal_eval(node.args[1])
    return out


# ------------------------------------------------------------------------------------- random draws
class Draws:
    """The official code's random draws, served in order from tensors drawn here in advance."""

    def __init__(self):
        self.queue: list[tuple[str, str, torch.Tensor]] = []

    def push(self, kind: str, what: str, tensor: torch.Tensor) -> None:
        self.queue.append((kind, what, tensor))

    def take(self, kind: str, shape) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        if not self.queue:
            raise DrawOrderError(f"the official code drew torch.{kind}{shape} where our update draws nothing more")
        want_kind, what, tensor = self.queue.pop(0)
        if want_kind != kind or tuple(tensor.shape) != shape:
            raise DrawOrderError(
                f"the official code drew torch.{kind}{shape} where our update draws {what} "
                f"(torch.{want_kind}{tuple(tensor.shape)}): the two consume noise differently"
            )
        return tensor.clone()

    def check_empty(self, where: str) -> None:
        if self.queue:
            raise DrawOrderError(
                f"{where}: the official code did not draw {[w for _, w, _ in self.queue]}, which our update draws"
            )


class TorchProxy:
    """Stands in for `torch` inside one official module: random draws come from `draws`, clamp calls with the
    flow-matching bounds are recorded; everything else is torch itself."""

    def __init__(self, draws: Draws, record: dict, weight_bounds=None):
        self._draws, self._record, self._bounds = draws, record, weight_bounds

    def __getattr__(self, name):
        return getattr(torch, name)

    def randn_like(self, t, **_kw):
        return self._draws.take("randn_like", t.shape).to(t.dtype)

    def rand_like(self, t, **_kw):
        return self._draws.take("rand_like", t.shape).to(t.dtype)

    def rand(self, *size, **_kw):
        return self._draws.take("rand", size[0] if len(size) == 1 and not isinstance(size[0], int) else size)

    def normal(self, mean, std, size=None, **_kw):
        if size is None or (mean, std) != (0, 1):
            raise DrawOrderError(
                f"the official code drew torch.normal({mean}, {std}, size={size}); this script "
                "serves only standard normal draws of a given size"
            )
        return self._draws.take("normal", size)

    def clamp(self, x, *args, **kwargs):
        out = torch.clamp(x, *args, **kwargs)
        bounds = tuple(args) or (kwargs.get("min"), kwargs.get("max"))
        if self._bounds is not None and bounds == self._bounds:
            self._record.setdefault("weights", []).append(out.detach().clone())
        return out


class FProxy:
    """Stands in for torch.nn.functional in the official algo module, recording each mse_loss."""

    def __init__(self, record: dict):
        self._record = record

    def __getattr__(self, name):
        return getattr(torch.nn.functional, name)

    def mse_loss(self, *args, **kwargs):
        out = torch.nn.functional.mse_loss(*args, **kwargs)
        self._record.setdefault("mse", []).append(out.detach().clone())
        return out


class ScalerProxy:
    """The official agent's GradScaler (disabled: identity), recording every loss it is asked to scale."""

    def __init__(self, scaler, record: dict):
        self._scaler, self._record = scaler, record

    def __getattr__(self, name):
        return getattr(self._scaler, name)

    def scale(self, loss):
        self._record.setdefault("losses", []).append(loss.detach().clone())
        return self._scaler.scale(loss)


def record_calls(obj, attr: str, record: dict, key: str, squeeze_member: bool):
    """Wrap obj.<attr> (an instance attribute shadows the method) so each call's output is kept in record[key]."""
    inner = getattr(obj, attr)

    def wrapped(*args, **kwargs):
        out = inner(*args, **kwargs)
        outs = out if isinstance(out, tuple) else (out,)
        outs = [o for o in outs if isinstance(o, torch.Tensor)]
        if attr in ("sample", "sample_env") and not squeeze_member:
            outs = outs[:1]  # Policy_flow.sample returns (action, 0, action)
        vals = [o.detach()[0] if squeeze_member else o.detach() for o in outs]
        record.setdefault(key, []).append(torch.cat([v.float() for v in vals], dim=-1).clone())
        return out

    setattr(obj, attr, wrapped)


# ------------------------------------------------------------------------------------------ weights
# Our value trunk (flowrl.agents.flowrl.value_trunk) by index -> the official critic/value layer names.
TRUNK = {
    0: "{input}",
    1: "{block}.0",
    2: "{block}.1",
    3: "{block}.2",
    5: "{block}.4",
    6: "{block}.5",
    8: "{block}.7",
    9: "{block}.8",
    10: "{output}",
}
POLICY = {0: "linear1", 1: "LayerNorm", 3: "linear2", 4: "LayerNorm2", 6: "linear3"}


def _pairs(ours_seq, official_module, names: dict, member: int, fmt: dict) -> list:
    """(official name, our parameter, member, official parameter, is a linear weight) for the layers in `names`."""
    from flowrl.ensemble import EnsembleLinear

    off = dict(official_module.named_parameters())
    out = []
    for idx, pattern in names.items():
        layer, name = ours_seq[idx], pattern.format(**fmt)
        for pname in ("weight", "bias"):
            key = f"{name}.{pname}"
            if key not in off:
                raise NotOfficialCheckout(
                    f"the official network has no parameter {key!r}: its layout differs from "
                    "the one this script maps (model/model.py changed?)"
                )
            out.append(
                (key, getattr(layer, pname), member, off[key], pname == "weight" and isinstance(layer, EnsembleLinear))
            )
    return out


def network_pairs(agent: FlowRL, off) -> dict[str, list]:
    """Per network (our name), every parameter paired with its official counterpart; every official parameter
    must be paired, with the same number of values."""
    nets = {}
    for name in ("critic", "critic_target", "buffer_critic", "buffer_critic_target"):
        nets[name] = [
            p
            for head in (1, 2)
            for p in _pairs(
                getattr(agent, name).net,
                _official_module(off, name),
                TRUNK,
                head - 1,
                {"input": f"Q{head}_input", "block": f"Q{head}_block", "output": f"Q{head}_output"},
            )
        ]
    nets["value"] = _pairs(
        agent.value, off.V_critic_buffer, TRUNK, 0, {"input": "v_input", "block": "block", "output": "v_output"}
    )
    nets["policy"] = _pairs(agent.policy.net, off.policy, POLICY, 0, {})
    for name, pairs in nets.items():
        official = dict(_official_module(off, name).named_parameters())
        unmapped = sorted(set(official) - {p[0] for p in pairs})
        wrong = [p[0] for p in pairs if ours_in_official_layout(p[1], p[2], p[4]).shape != p[3].shape]
        if unmapped or wrong:
            raise NotOfficialCheckout(
                f"official {name}: parameters this script does not map {unmapped} or maps to "
                f"another shape {wrong} (model/model.py changed?)"
            )
    return nets


def _official_module(off, ours_name: str):
    return getattr(
        off,
        {
            "critic": "critic",
            "critic_target": "critic_target",
            "buffer_critic": "critic_buffer",
            "buffer_critic_target": "critic_target_buffer",
            "value": "V_critic_buffer",
            "policy": "policy",
        }[ours_name],
    )


def ours_in_official_layout(param: torch.Tensor, member: int, linear_weight: bool) -> torch.Tensor:
    """Our (n, d_in, d_out) linear weight / (n, 1, d) bias or LayerNorm parameter of one member, as nn.Linear /
    nn.LayerNorm store it ((d_out, d_in) / (d,))."""
    return param[member].t() if linear_weight else param[member, 0]


@torch.no_grad()
def copy_official_into_ours(pairs: dict[str, list]) -> None:
    for plist in pairs.values():
        for _, ours, member, official, linear_weight in plist:
            ours[member].copy_(official.t() if linear_weight else official.view(1, -1))


# ------------------------------------------------------------------------------------------ compare
@dataclasses.dataclass
class Row:
    quantity: str
    count: int  # values compared
    max_abs: float
    scale: float  # max |official|
    rtol: float
    note: str = ""

    @property
    def rel(self) -> float:
        return self.max_abs / self.scale if self.scale > 0 else (0.0 if self.max_abs == 0 else math.inf)

    limit: float | None = None  # parameter rows: an absolute tolerance on `excess` (see parameter_row)
    excess: float = 0.0

    @property
    def ok(self) -> bool:
        if self.limit is not None:
            return self.excess <= self.limit
        return self.max_abs <= self.rtol * self.scale or self.max_abs == 0.0


def compare(quantity: str, ours: list[torch.Tensor], official: list[torch.Tensor], rtol: float = RTOL) -> Row:
    if len(ours) != len(official):
        return Row(quantity, 0, math.inf, 0.0, rtol, f"ours has {len(ours)} values/calls, official {len(official)}")
    if not ours:
        return Row(quantity, 0, 0.0, 0.0, rtol, "nothing recorded")
    max_abs, scale, count = 0.0, 0.0, 0
    for a, b in zip(ours, official):
        a, b = a.detach().double().reshape(-1), b.detach().double().reshape(-1)
        if a.shape != b.shape:
            return Row(quantity, 0, math.inf, 0.0, rtol, f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
        max_abs = max(max_abs, float((a - b).abs().max()))
        scale = max(scale, float(b.abs().max()))
        count += a.numel()
    return Row(quantity, count, max_abs, scale, rtol)


# --------------------------------------------------------------------------------------- optimisers
OPTIMISERS = {
    "critic": ("critic_opt", "critic_optim"),
    "buffer_critic": ("buffer_critic_opt", "critic_buffer_optim"),
    "value": ("value_opt", "V_critic_buffer_optim"),
    "policy": ("policy_opt", "policy_optim"),
}
TARGETS = {"critic_target": "critic", "buffer_critic_target": "buffer_critic"}


def snapshot_before_step(opt, store: dict, key: str) -> None:
    """Wrap opt.step so that, when it runs, store[key] maps each parameter to (its gradient, Adam's exp_avg,
    exp_avg_sq and step count) as they are just before the step."""
    inner = opt.step

    def step(*args, **kwargs):
        snap = {}
        for group in opt.param_groups:
            for prm in group["params"]:
                st = opt.state.get(prm, {})
                snap[prm] = (
                    prm.grad.detach().clone(),
                    st["exp_avg"].clone() if "exp_avg" in st else torch.zeros_like(prm),
                    st["exp_avg_sq"].clone() if "exp_avg_sq" in st else torch.zeros_like(prm),
                    float(st["step"]) if "step" in st else 0.0,
                )
        store[key] = snap
        return inner(*args, **kwargs)

    opt.step = step


@torch.no_grad()
def resync(pairs: dict[str, list], agent: FlowRL, official) -> None:
    """Set our parameters and Adam moments to the official ones, so the next update starts from the same state."""
    copy_official_into_ours(pairs)
    for name, (ours_opt, off_opt) in OPTIMISERS.items():
        o_opt, f_opt = getattr(agent, ours_opt), getattr(official, off_opt)
        for _, ours, member, off, linear_weight in pairs[name]:
            f_st = f_opt.state.get(off)
            if not f_st:
                continue
            o_st = o_opt.state[ours]
            for k in ("exp_avg", "exp_avg_sq"):
                o_st[k][member].copy_(f_st[k].t() if linear_weight else f_st[k].view(1, -1))
            o_st["step"].fill_(float(f_st["step"]))


def adam_step(g, m, v, t, lr, beta1, beta2, eps):
    """The change Adam (Kingma & Ba, no weight decay) makes to a parameter with gradient g, moments m, v after t
    steps: -lr * m_hat / (sqrt(v_hat) + eps). Float64."""
    g, m, v = g.double(), m.double(), v.double()
    m1, v1 = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
    return -lr * (m1 / (1 - beta1 ** (t + 1))) / ((v1 / (1 - beta2 ** (t + 1))).sqrt() + eps)


def parameter_row(quantity, ours_now, off_now, before, explained) -> Row:
    """Parameters after an update that started from identical values: max|ours - official| against
    ATOL + explained, where ATOL = RTOL_STEP * (largest official change) + 4 float32 ulps of the largest
    parameter, and `explained` is what the two gradients' own rounding differences make Adam do (for
    elements whose gradient is near 0, Adam's g / sqrt(v) turns a rounding-level gradient difference into a
    step difference of up to 2 lr)."""
    step = max(float((o.detach() - b).abs().max()) for o, b in zip(off_now, before))
    scale = max(float(o.detach().abs().max()) for o in off_now)
    atol = RTOL_STEP * step + 4 * 2.0**-23 * scale
    max_abs, excess, amplified, count = 0.0, 0.0, 0, 0
    for a, b, e in zip(ours_now, off_now, explained):
        diff = (a.detach().double() - b.detach().double()).abs()
        max_abs = max(max_abs, float(diff.max()))
        excess = max(excess, float((diff - e).max()))
        amplified += int(((diff > atol) & (e > atol)).sum())
        count += diff.numel()
    note = (
        f"{amplified} values with gradients at rounding level differ by what Adam makes of that rounding"
        if amplified
        else ""
    )
    # The row passes when the unexplained part is within ATOL; it reports max_abs and, as tolerance, ATOL.
    return Row(quantity, count, max_abs, step, RTOL_STEP, note, limit=atol, excess=excess)


# ----------------------------------------------------------------------------------------- the check
class Box:
    """The little of a gym Box space the official agent reads: shape, low, high."""

    def __init__(self, low, high):
        self.low, self.high = np.asarray(low, np.float32), np.asarray(high, np.float32)
        self.shape = self.low.shape


class ReplayStub:
    """Hands the official agent the batch this script chose (its ReplayMemory.sample's return format)."""

    def __init__(self):
        self.next = None

    def sample(self, batch_size):
        s, a, r, s2, m = self.next
        assert s.shape[0] == batch_size
        return s, a, r, s2, m


def run_check(
    official_path,
    obs_dim=17,
    act_dim=6,
    hidden=None,
    batch=None,
    updates=6,
    seed=0,
    act_states=8,
    log=print,
    agent_overrides=None,
) -> tuple[list[Row], dict]:
    """Rows of the comparison and facts about it. `agent_overrides`: FlowRLConfig settings for our side (the
    tests use them to check that a changed update is caught)."""
    off_mods = load_official(official_path)
    d = off_mods.defaults
    hidden = hidden or int(d.get("hidden_size", 512))
    batch = batch or int(d.get("batch_size", 256))
    args = types.SimpleNamespace(
        gamma=d["gamma"],
        tau=d["tau"],
        quantile=d["quantile"],
        lamda=d["lamda"],
        epsilon=d["epsilon"],
        policy=d["policy"],
        steps=d["steps"],
        lr=d["lr"],
        target_update_interval=d["target_update_interval"],
        hidden_size=hidden,
        cuda=False,
        device=0,
    )
    # Non-unit, asymmetric bounds so the action rescaling is checked too (DMC's are [-1, 1]).
    low = np.linspace(-1.0, -2.0, act_dim).astype(np.float32)
    high = np.linspace(1.0, 0.5, act_dim).astype(np.float32)
    torch.manual_seed(seed)
    official = off_mods.algo.flowAC(obs_dim, Box(low, high), args)

    ours_cfg = FlowRLConfig(hidden_dim=hidden, **(agent_overrides or {}))
    settings = [
        ("gamma", ours_cfg.gamma, d["gamma"]),
        ("tau", ours_cfg.tau, d["tau"]),
        ("expectile (quantile)", ours_cfg.quantile, d["quantile"]),
        ("lambda", ours_cfg.lam, d["lamda"]),
        ("lr", ours_cfg.lr, d["lr"]),
        ("target_update_interval", ours_cfg.target_update_interval, d["target_update_interval"]),
        ("flow steps", ours_cfg.flow_steps, d["steps"]),
        ("exploration noise (epsilon)", ours_cfg.exploration_noise, d["epsilon"]),
        ("hidden (default)", FlowRLConfig().hidden_dim, d["hidden_size"]),
        (
            "flow-matching weight clamp",
            (ours_cfg.weight_min, ours_cfg.weight_max),
            (off_mods.algo.CFM_MIN, off_mods.algo.CFM_MAX),
        ),
    ]
    agent = FlowRL(EnvSpec(obs_dim, act_dim, low, high), ours_cfg, "cpu")
    pairs = network_pairs(agent, official)
    copy_official_into_ours(pairs)

    rec_o: dict = {}
    rec_u: dict = {}
    draws = Draws()
    off_mods.algo.torch = TorchProxy(draws, rec_o, (off_mods.algo.CFM_MIN, off_mods.algo.CFM_MAX))
    off_mods.model.torch = TorchProxy(draws, rec_o)
    off_mods.algo.F = FProxy(rec_o)
    official.scaler = ScalerProxy(official.scaler, rec_o)
    for name in ("critic", "critic_target", "buffer_critic", "buffer_critic_target", "value", "policy"):
        record_calls(getattr(agent, name), "forward", rec_u, f"out:{name}", squeeze_member=True)
        record_calls(_official_module(official, name), "forward", rec_o, f"out:{name}", squeeze_member=False)
    record_calls(agent, "sample", rec_u, "actions", squeeze_member=True)
    record_calls(official.policy, "sample", rec_o, "actions", squeeze_member=False)
    record_calls(official.policy, "sample_env", rec_o, "act", squeeze_member=False)
    record_calls(agent, "flow_weights", rec_u, "weights", squeeze_member=True)
    record_calls(agent, "flow_matching_loss", rec_u, "flow_term", squeeze_member=True)

    steps_u: dict = {}
    steps_o: dict = {}
    for name, (ours_opt, off_opt) in OPTIMISERS.items():
        snapshot_before_step(getattr(agent, ours_opt), steps_u, name)
        snapshot_before_step(getattr(official, off_opt), steps_o, name)
    gen = torch.Generator().manual_seed(seed + 1)
    memory = ReplayStub()
    rows: list[Row] = []
    interval = d["target_update_interval"]
    for u in range(updates):
        phase = u % interval == 0
        s = torch.randn(batch, obs_dim, generator=gen)
        a = torch.rand(batch, act_dim, generator=gen) * torch.as_tensor(high - low) + torch.as_tensor(low)
        r = torch.randn(batch, generator=gen)
        s2 = torch.randn(batch, obs_dim, generator=gen)
        m = (torch.rand(batch, generator=gen) > 0.1).float()  # some terminal transitions
        noise_raw = {
            "a0": torch.randn(batch, act_dim, generator=gen),
            "next_a0": torch.randn(batch, act_dim, generator=gen),
        }
        draws.push("randn_like", "a_0 for flow matching", noise_raw["a0"])
        draws.push("normal", "a_0 for pi(s')", noise_raw["next_a0"])
        if phase:
            noise_raw["pi_a0"] = torch.randn(batch, act_dim, generator=gen)
            noise_raw["t"] = torch.rand(batch, 1, generator=gen)
            draws.push("normal", "a_0 for pi(s)", noise_raw["pi_a0"])
            draws.push("rand", "flow-matching times t", noise_raw["t"])
        ours_noise = {
            k: (v if k == "t" else v.clamp(-ours_cfg.noise_clip, ours_cfg.noise_clip))[None]
            for k, v in noise_raw.items()
        }
        resync(pairs, agent, official)
        before = {n: [p[3].detach().clone() for p in pl] for n, pl in pairs.items()}
        for store in (rec_o, rec_u, steps_u, steps_o):
            store.clear()

        memory.next = (s.numpy(), a.numpy(), r.numpy(), s2.numpy(), m.numpy())
        official.update_parameters(memory, batch, u)
        draws.check_empty(f"update {u}")
        agent.update_noise = lambda b, p, _n=ours_noise, _k=(batch, phase): (
            dict(_n) if (b, p) == _k else _bad_noise(b, p)
        )
        metrics = agent.update_members(Batch(s[None], a[None], r[:, None][None], s2[None], m[:, None][None]), u)

        tag = f"update {u}{' (policy + targets)' if phase else ''}"
        for name in ("critic", "critic_target", "buffer_critic", "buffer_critic_target", "value", "policy"):
            rows.append(compare(f"{tag}: {name} outputs", rec_u.get(f"out:{name}", []), rec_o.get(f"out:{name}", [])))
        rows.append(
            compare(
                f"{tag}: sampled actions pi(s'){', pi(s)' if phase else ''}",
                rec_u.get("actions", []),
                rec_o.get("actions", []),
            )
        )
        losses = rec_o.get("losses", [])
        names = ["critic_loss", "buffer_critic_loss", "value_loss"] + (["policy_loss"] if phase else [])
        if len(losses) != len(names):
            rows.append(
                Row(
                    f"{tag}: losses",
                    0,
                    math.inf,
                    0.0,
                    RTOL,
                    f"the official update scaled {len(losses)} losses, ours computes {len(names)}",
                )
            )
        else:
            for name, off_loss in zip(names, losses):
                rows.append(compare(f"{tag}: {name}", [metrics[name][0]], [off_loss]))
        if phase:
            rows.append(compare(f"{tag}: flow-matching weights w", rec_u.get("weights", []), rec_o.get("weights", [])))
            mse = rec_o.get("mse", [])
            off_term = [rec_o["weights"][0] * mse[-1]] if mse and rec_o.get("weights") else []
            rows.append(compare(f"{tag}: flow-matching term w * MSE", rec_u.get("flow_term", []), off_term))
        explained = {}
        for name in OPTIMISERS:
            if name not in steps_o:
                continue
            group = getattr(official, OPTIMISERS[name][1]).param_groups[0]
            hyper = (group["lr"], *group["betas"], group["eps"])
            g_u, g_o, expl = [], [], []
            for _, ours, member, off, linear_weight in pairs[name]:
                gu = ours_in_official_layout(steps_u[name][ours][0], member, linear_weight)
                go, m_o, v_o, t_o = steps_o[name][off]
                g_u.append(gu)
                g_o.append(go)
                expl.append((adam_step(gu, m_o, v_o, t_o, *hyper) - adam_step(go, m_o, v_o, t_o, *hyper)).abs())
            explained[name] = expl
            rows.append(compare(f"{tag}: {name} gradient", g_u, g_o))
        for name in TARGETS:
            if TARGETS[name] in explained and phase:
                explained[name] = [e * official.tau for e in explained[TARGETS[name]]]
        for name in explained:
            if name in TARGETS:
                continue
            o_opt, f_opt = getattr(agent, OPTIMISERS[name][0]), getattr(official, OPTIMISERS[name][1])
            for key, label in (("exp_avg", "first"), ("exp_avg_sq", "second")):
                ours_m = [ours_in_official_layout(o_opt.state[p[1]][key], p[2], p[4]) for p in pairs[name]]
                off_m = [f_opt.state[p[3]][key] for p in pairs[name]]
                rows.append(compare(f"{tag}: {name} Adam {label} moment", ours_m, off_m))
            counts = {float(o_opt.state[p[1]]["step"]) for p in pairs[name]} | {
                float(f_opt.state[p[3]]["step"]) for p in pairs[name]
            }
            if len(counts) != 1:
                rows.append(Row(f"{tag}: {name} Adam step count", 0, math.inf, 0.0, RTOL, f"counts differ: {counts}"))
        for name, plist in pairs.items():
            ours_now = [ours_in_official_layout(p[1], p[2], p[4]) for p in plist]
            off_now = [p[3] for p in plist]
            what = "soft-updated target parameters" if name in TARGETS else "parameters after Adam"
            if name not in explained:  # not stepped in this update: must be unchanged and equal
                rows.append(compare(f"{tag}: {name} parameters (unchanged)", ours_now, off_now))
                continue
            rows.append(parameter_row(f"{tag}: {name} {what}", ours_now, off_now, before[name], explained[name]))
        log(f"  update {u} done")

    # Acting with fixed noise, training and evaluation mode, one observation per call as the official code acts.
    for evaluate in (False, True):
        ours_act, off_act = [], []
        for _ in range(act_states):
            obs = torch.randn(obs_dim, generator=gen)
            raw = torch.randn(1, act_dim, generator=gen)
            draws.push("normal", "a_0 for acting", raw)
            if not evaluate:
                draws.push(
                    "rand_like", "exploration noise (scaled by epsilon = 0)", torch.rand(1, act_dim, generator=gen)
                )
            off_act.append(torch.as_tensor(official.select_action(obs.numpy(), evaluate=evaluate)))
            draws.check_empty("acting")
            agent.flow_noise = lambda b, generators=None, _r=raw: _r.clamp(-ours_cfg.noise_clip, ours_cfg.noise_clip)[
                None
            ]
            ours_act.append(agent.act(obs[None], deterministic=evaluate)[0])
        rows.append(compare(f"acting with fixed noise ({'evaluation' if evaluate else 'training'})", ours_act, off_act))
    info = {
        "commit": off_mods.commit,
        "path": str(off_mods.path),
        "hidden": hidden,
        "batch": batch,
        "updates": updates,
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "settings": settings,
        "cpu_matmul": agent.cpu_matmul,
        "torch": torch.__version__,
    }
    return rows, info


def _bad_noise(batch_size, policy_phase):
    raise DrawOrderError(
        f"our update asked for noise of batch {batch_size}, policy phase {policy_phase}, "
        "which this script did not prepare (the delayed-update schedules differ)"
    )


def format_table(rows: list[Row]) -> str:
    w = max(len(r.quantity) for r in rows)
    lines = [f"{'quantity':<{w}}  {'values':>8}  {'max|ours-off|':>13}  {'max|off|':>10}  {'rel':>9}  {'tol':>7}  ok"]
    for r in rows:
        tol = f"{r.rtol:>7.0e}" if r.limit is None else f"{r.limit:>7.1e}"
        note = r.note if r.limit is None else f"unexplained {r.excess:.1e}" + (f"; {r.note}" if r.note else "")
        lines.append(
            f"{r.quantity:<{w}}  {r.count:>8}  {r.max_abs:>13.3e}  {r.scale:>10.3e}  {r.rel:>9.2e}  "
            f"{tol}  {'yes' if r.ok else 'NO'}{'  ' + note if note else ''}"
        )
    return "\n".join(lines)


def summarise(rows: list[Row]) -> str:
    """One line per kind of quantity over all updates: how many updates compared it, the largest absolute and
    relative difference, and for parameters the largest difference beyond what Adam makes of the gradients'
    rounding (with its tolerance) and how many values had gradients at rounding level."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        key = r.quantity.split(": ", 1)[-1] if r.quantity.startswith("update ") else r.quantity
        groups.setdefault(key.replace("pi(s'), pi(s)", "pi(s')"), []).append(r)
    w = max(len(k) for k in groups)
    lines = [f"{'quantity':<{w}}  {'rows':>4}  {'max|ours-off|':>13}  {'max rel':>9}  {'tolerance':>9}  ok  notes"]
    for key, rs in groups.items():
        ok = all(r.ok for r in rs)
        max_abs = max(r.max_abs for r in rs)
        if rs[0].limit is None:
            tol, rel = f"{rs[0].rtol:.0e} rel", max(r.rel for r in rs)
            note = ""
        else:
            worst = max(rs, key=lambda r: r.excess / r.limit)
            tol, rel = f"{worst.limit:.1e}", max(r.rel for r in rs)
            amplified = sum(int(r.note.split()[0]) for r in rs if r.note)
            note = f"unexplained <= {worst.excess:.1e}" + (
                f"; {amplified} values with rounding-level gradients, differences explained by Adam"
                if amplified
                else ""
            )
        lines.append(
            f"{key:<{w}}  {len(rs):>4}  {max_abs:>13.3e}  {rel:>9.2e}  {tol:>9}  {'yes' if ok else 'NO '}  {note}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--official", required=True, help="your checkout of github bytedance/FlowRL")
    ap.add_argument("--obs-dim", type=int, default=17)
    ap.add_argument("--act-dim", type=int, default=6)
    ap.add_argument("--hidden", type=int, default=None, help="default: the official hidden_size (512)")
    ap.add_argument("--batch", type=int, default=None, help="default: the official batch_size (256)")
    ap.add_argument("--updates", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.updates < 2:
        ap.error("--updates must be at least 2 (one update with and one without the delayed policy step)")
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    try:
        rows, info = run_check(
            args.official,
            args.obs_dim,
            args.act_dim,
            args.hidden,
            args.batch,
            args.updates,
            args.seed,
            log=lambda m: print(m, file=sys.stderr),
        )
    except NotOfficialCheckout as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DrawOrderError as exc:
        print(f"MISMATCH: {exc}", file=sys.stderr)
        return 1
    print(f"# official code: {info['path']} at commit {info['commit'] or 'unknown (not a git checkout)'}")
    print(
        f"# torch {info['torch']}, CPU, float32 (the official bf16 autocast is CUDA-only), our cpu_matmul="
        f"{info['cpu_matmul']}; obs {info['obs_dim']}, act {info['act_dim']}, hidden {info['hidden']}, "
        f"batch {info['batch']}, {info['updates']} updates"
    )
    print("# defaults, ours vs official:")
    for name, ours, theirs in info["settings"]:
        print(f"#   {name}: {ours!r} vs {theirs!r}{'' if ours == theirs else '  DIFFERENT'}")
    print(format_table(rows))
    print()
    print("# summary: each quantity's worst case over all updates")
    print(summarise(rows))
    bad = [r for r in rows if not r.ok]
    settings_differ = [n for n, o, t in info["settings"] if o != t]
    if bad or settings_differ:
        print(
            f"VERDICT: MISMATCH: {len(bad)} of {len(rows)} quantities exceed float32 rounding"
            + (f"; default settings differ: {settings_differ}" if settings_differ else "")
            + (f" (first: {bad[0].quantity}, {bad[0].rel:.2e} relative)" if bad else "")
        )
        return 1
    relative = [r for r in rows if r.limit is None]
    worst = max(relative, key=lambda r: r.rel)
    worst_param = max((r for r in rows if r.limit is not None), key=lambda r: r.excess / r.limit)
    print(
        f"VERDICT: EQUIVALENT: all {len(rows)} quantities agree to float32 rounding (largest relative difference "
        f"{worst.rel:.2e}, at '{worst.quantity}'; parameters differ by at most {worst_param.excess:.1e} beyond what "
        f"Adam makes of the gradients' rounding, against a tolerance of {worst_param.limit:.1e})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
