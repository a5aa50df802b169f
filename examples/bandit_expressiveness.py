"""Why a flow policy: a 2-D continuous bandit with a multimodal replay buffer (FlowRL paper, Fig. 2).

The buffer holds actions from a 10-component Gaussian mixture (modes on a circle). A known reward
function gives three of the modes a high value and the others a low one. Three policies learn from
the same buffer:

  value-guided flow   flow matching with per-sample weights exp(beta * (r(a) - mean r)), the
                      advantage-weighted flow-matching term FlowRL uses for policy improvement
  unguided flow       plain flow matching: copies the buffer, all 10 modes
  Gaussian            a tanh-free diagonal Gaussian trained to maximise E[r(a)] + alpha * entropy, the
                      SAC-style objective: a unimodal family, so it settles on a single mode

and the figure shows their samples over the reward landscape. Run:

    python examples/bandit_expressiveness.py --out bandit_expressiveness.png

Everything is self-contained (a few seconds on a CPU); `tests/test_bandit_expressiveness.py` checks
the mode coverage that the figure shows.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from flowrl.networks import mlp

N_MODES = 10
RADIUS = 0.7  # modes on a circle of this radius in the [-1, 1]^2 action square
MODE_STD = 0.06  # spread of each buffer mode
HIGH_VALUE_MODES = (0, 3, 6)  # the modes the reward favours
MODE_VALUES = torch.tensor([1.0 if k in HIGH_VALUE_MODES else 0.15 for k in range(N_MODES)])
REWARD_WIDTH = 0.12  # each mode's reward bump: v_k * exp(-|a - mu_k|^2 / (2 * width^2))


def mode_centers() -> torch.Tensor:
    angles = torch.arange(N_MODES) * (2 * math.pi / N_MODES)
    return RADIUS * torch.stack([angles.cos(), angles.sin()], dim=-1)


def reward(actions: torch.Tensor) -> torch.Tensor:
    """r(a) = sum_k v_k exp(-|a - mu_k|^2 / (2 w^2)): high at the favoured modes, low at the others, ~0 elsewhere."""
    d2 = ((actions[:, None, :] - mode_centers()[None]) ** 2).sum(-1)
    return (MODE_VALUES[None] * torch.exp(-d2 / (2 * REWARD_WIDTH**2))).sum(-1)


def buffer_actions(n: int, generator: torch.Generator) -> torch.Tensor:
    """n actions from the 10-mode Gaussian mixture, equal weights."""
    modes = torch.randint(0, N_MODES, (n,), generator=generator)
    return mode_centers()[modes] + MODE_STD * torch.randn(n, 2, generator=generator)


# ----------------------------------------------------------------------------------- the policies
class VelocityField(nn.Module):
    """v(a_t, t) for a state-free bandit (a state would simply be concatenated to the input).
    Time enters through Fourier features, which lets a small MLP form the sharp field near t = 1."""

    def __init__(self, hidden: int = 128, time_features: int = 8):
        super().__init__()
        self.register_buffer("freqs", math.pi * torch.arange(1, time_features + 1).float())
        self.net = mlp(2 + 2 * time_features, [hidden, hidden, hidden], 2, act="silu")

    def forward(self, a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([a, torch.sin(t * self.freqs), torch.cos(t * self.freqs)], dim=-1))

    @torch.no_grad()
    def sample(self, n: int, steps: int, generator: torch.Generator) -> torch.Tensor:
        """Integrate da/dt = v from a_0 ~ N(0, I) over [0, 1] with the midpoint rule."""
        a, dt = torch.randn(n, 2, generator=generator), 1.0 / steps
        for i in range(steps):
            t = torch.full((n, 1), i * dt)
            a_mid = a + 0.5 * dt * self(a, t)
            a = a + dt * self(a_mid, t + 0.5 * dt)
        return a


@dataclass
class TrainSettings:
    steps: int = 8000
    batch_size: int = 256
    lr: float = 2e-3
    hidden: int = 128
    flow_steps: int = 10
    beta: float = 5.0  # value guidance temperature: weights exp(beta * advantage)
    entropy_alpha: float = 0.005  # Gaussian policy's entropy bonus


def flow_weights(actions: torch.Tensor, beta: float) -> torch.Tensor:
    """Advantage weights exp(beta * (r(a) - mean r)), normalised to mean 1 over the batch."""
    r = reward(actions)
    w = torch.exp(beta * (r - r.mean()))
    return w / w.mean()


def train_flow(data: torch.Tensor, settings: TrainSettings, guided: bool, seed: int) -> VelocityField:
    """Conditional flow matching along straight paths a_t = t a + (1 - t) a_0, optionally value-weighted."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = VelocityField(settings.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, settings.steps)
    for _ in range(settings.steps):
        a1 = data[torch.randint(0, len(data), (settings.batch_size,), generator=g)]
        a0 = torch.randn(a1.shape, generator=g)
        t = torch.rand(len(a1), 1, generator=g)
        err = ((model(t * a1 + (1 - t) * a0, t) - (a1 - a0)) ** 2).sum(-1)
        w = flow_weights(a1, settings.beta) if guided else torch.ones_like(err)
        loss = (w * err).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model


class GaussianPolicy(nn.Module):
    def __init__(self):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(2))
        self.log_std = nn.Parameter(torch.full((2,), math.log(0.5)))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean + self.log_std.exp() * torch.randn(n, 2, generator=generator)


def train_gaussian(settings: TrainSettings, seed: int) -> GaussianPolicy:
    """Reparameterised ascent on E[r(a)] + alpha * H(pi), the SAC policy objective with a known Q = r."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    policy = GaussianPolicy()
    opt = torch.optim.Adam(policy.parameters(), lr=settings.lr)
    for _ in range(settings.steps):
        a = policy.sample(settings.batch_size, g)
        entropy = policy.log_std.sum()  # up to a constant
        loss = -(reward(a).mean() + settings.entropy_alpha * entropy)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return policy


# ----------------------------------------------------------------------------------- evaluation
def mode_masses(samples: torch.Tensor, within: float = 3 * MODE_STD) -> torch.Tensor:
    """Fraction of samples that lie within `within` of each mode centre, shape (N_MODES,)."""
    d = torch.cdist(samples, mode_centers())
    nearest = d.argmin(-1)
    close = d.gather(1, nearest[:, None])[:, 0] <= within
    return torch.bincount(nearest[close], minlength=N_MODES).float() / len(samples)


def summarize(samples: torch.Tensor, min_mass: float = 0.03) -> dict:
    masses = mode_masses(samples)
    high = list(HIGH_VALUE_MODES)
    return {
        "modes_covered": int((masses >= min_mass).sum()),
        "high_modes_covered": int((masses[high] >= min_mass).sum()),
        "mass_on_high_value_modes": float(masses[high].sum()),
        "mass_near_any_mode": float(masses.sum()),
        "mean_reward": float(reward(samples).mean()),
        "masses": [round(float(m), 3) for m in masses],
    }


def run(settings: TrainSettings | None = None, n_data: int = 5000, n_samples: int = 2000, seed: int = 0) -> dict:
    """Train the three policies and return their samples, the buffer, and coverage statistics."""
    settings = settings or TrainSettings()
    g = torch.Generator().manual_seed(seed)
    data = buffer_actions(n_data, g)
    guided = train_flow(data, settings, guided=True, seed=seed + 1)
    unguided = train_flow(data, settings, guided=False, seed=seed + 2)
    gaussian = train_gaussian(settings, seed=seed + 3)
    with torch.no_grad():
        samples = {
            "buffer": data[:n_samples],
            "value-guided flow": guided.sample(n_samples, settings.flow_steps, g),
            "unguided flow": unguided.sample(n_samples, settings.flow_steps, g),
            "Gaussian": gaussian.sample(n_samples, g),
        }
    return {"samples": samples, "stats": {k: summarize(v) for k, v in samples.items()}}


def plot(result: dict, out: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    grid = torch.linspace(-1.2, 1.2, 200)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    rr = reward(torch.stack([xx.flatten(), yy.flatten()], -1)).reshape(xx.shape)
    names = list(result["samples"])
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 4.2), sharex=True, sharey=True)
    for ax, name in zip(axes, names):
        ax.contourf(xx, yy, rr, levels=20, cmap="Greens", alpha=0.6)
        s = result["samples"][name]
        ax.scatter(s[:, 0], s[:, 1], s=2, c="tab:purple", alpha=0.35, linewidths=0)
        centers = mode_centers()
        high = list(HIGH_VALUE_MODES)
        ax.scatter(centers[high, 0], centers[high, 1], marker="*", s=120, c="gold", edgecolors="k", zorder=3)
        st = result["stats"][name]
        ax.set_title(
            f"{name}\n{st['modes_covered']}/10 modes, {100 * st['mass_on_high_value_modes']:.0f}% on high-value"
        )
        ax.set_xlim(-1.2, 1.2)
        ax.set_ylim(-1.2, 1.2)
        ax.set_aspect("equal")
    fig.suptitle("2-D bandit: buffer from a 10-mode mixture; stars mark the high-value modes (reward in green)")
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--out", default="bandit_expressiveness.png", help="PNG to write (refuses to overwrite without --force)"
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.add_argument("--steps", type=int, default=TrainSettings.steps, help="training steps per policy")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if Path(args.out).exists() and not args.force:
        p.error(f"{args.out} exists; pass --force to overwrite it or choose another --out")
    result = run(TrainSettings(steps=args.steps), seed=args.seed)
    for name, st in result["stats"].items():
        print(
            f"{name:>18}: {st['modes_covered']:2d}/10 modes covered, {100 * st['mass_on_high_value_modes']:5.1f}% of "
            f"samples on the {len(HIGH_VALUE_MODES)} high-value modes, mean reward {st['mean_reward']:.3f}"
        )
    print(f"wrote {plot(result, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
