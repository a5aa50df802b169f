"""SAC, TD3 and QVPO: the pieces of each update against hand-computed or closed-form values.

(Shapes, bounds, determinism, checkpoints and learning a bandit are in tests/test_conformance.py.)
"""

import math

import pytest
import torch
from conftest import SPEC, ConstQ, make_batch
from torch import nn

from baselines.qvpo import QVPO, QVPOConfig, beta_schedule
from baselines.sac import SAC, SACConfig
from baselines.td3 import TD3, TD3Config
from flowrl.config import resolve_config


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_registry_and_run_config_build_each_baseline():
    for algo, cls in [("sac", SAC), ("td3", TD3), ("qvpo", QVPO)]:
        cfg = resolve_config({"algo": algo, "agent": {"hidden_dim": 16}})
        assert isinstance(cfg.agent, cls.Config) and cfg.agent.hidden_dim == 16
        assert cfg.replay_recent_fraction == 0.0  # plain uniform replay for the baselines


@pytest.mark.parametrize(
    "config_cls,bad",
    [
        (SACConfig, {"tau": 0.0}),
        (SACConfig, {"log_std_min": 5.0}),
        (TD3Config, {"policy_delay": 0}),
        (TD3Config, {"exploration_noise": -0.1}),
        (QVPOConfig, {"diffusion_steps": 0}),
        (QVPOConfig, {"beta_schedule": "quadratic"}),
        (QVPOConfig, {"time_dim": 7}),
    ],
)
def test_bad_config_values_are_rejected_with_their_name(config_cls, bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        config_cls(**bad)


# ----------------------------------------------------------------------------------- SAC
def make_sac(seed=0, **kw):
    torch.manual_seed(seed)
    return SAC(SPEC, SACConfig(hidden_dim=16, **kw))


def test_sac_log_prob_matches_the_tanh_transformed_gaussian():
    from torch.distributions import Normal, TransformedDistribution
    from torch.distributions.transforms import TanhTransform

    agent = make_sac()
    obs = torch.randn(64, 3)
    torch.manual_seed(3)
    action, log_prob = agent.policy.sample(obs)
    mean, log_std = agent.policy(obs)
    dist = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()])
    expected = dist.log_prob(action.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1, keepdim=True)
    assert torch.allclose(log_prob, expected, atol=1e-3)
    assert (action.abs() < 1).all()


def test_sac_defaults_and_deterministic_action_is_the_squashed_mean():
    agent = make_sac()
    assert agent.target_entropy == -2.0 and agent.log_alpha.item() == 0.0
    obs = torch.randn(5, 3)
    unit = torch.tanh(agent.policy(obs)[0])
    expected = torch.tensor([-2.0, 0.0]) + (unit + 1) / 2 * 3.0
    assert torch.allclose(agent.act(obs, deterministic=True), expected)


def test_sac_critic_target_is_the_soft_bellman_backup():
    agent = make_sac(init_alpha=0.5)
    agent.critic, agent.critic_target = ConstQ(1.0), ConstQ(2.0)
    agent.critic_opt = torch.optim.Adam(agent.critic.parameters(), lr=1e-3)
    p = next(agent.policy.parameters())  # fixed samples that still reach the policy's parameters
    agent.policy.sample = lambda obs: (
        torch.zeros(obs.shape[0], 2) + 0 * p.sum(),
        torch.full((obs.shape[0], 1), -3.0) + 0 * p.sum(),
    )
    m = agent.update(make_batch(reward=0.5), step=0)
    target = 0.5 + 0.99 * (2.0 - 0.5 * -3.0)  # r + gamma * (min Q' - alpha * log pi)
    assert m["critic_loss"].item() == pytest.approx(2 * (1.0 - target) ** 2, rel=1e-5)
    m = agent.update(make_batch(reward=0.5, not_done=0.0), step=1)  # terminal: no bootstrap
    q = agent.critic.p.item()
    assert m["critic_loss"].item() == pytest.approx(2 * (q - 0.5) ** 2, rel=1e-2)


def test_sac_temperature_moves_toward_the_entropy_target():
    low = make_sac(log_std_min=-20.0)
    with torch.no_grad():  # a nearly deterministic policy: entropy far below -act_dim
        low.policy.net[-1].bias[2:] = -10.0
    low.update(make_batch(), 0)
    assert low.log_alpha.item() > 0  # alpha grows to push entropy up
    high = make_sac()
    with torch.no_grad():  # std 1: the squashed entropy (about +0.7) is above the target -2
        high.policy.net[-1].weight[2:] = 0.0
        high.policy.net[-1].bias[2:] = 0.0
    high.update(make_batch(), 0)
    assert high.log_alpha.item() < 0
    fixed = make_sac(auto_alpha=False, init_alpha=0.2)
    m = fixed.update(make_batch(), 0)
    assert m["alpha"].item() == pytest.approx(0.2) and "alpha_loss" not in m


def test_sac_target_network_polyak_step():
    agent = make_sac(tau=0.1)
    before = params(agent.critic_target)
    agent.update(make_batch(), 0)
    for old, new, online in zip(before, agent.critic_target.parameters(), agent.critic.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * online, atol=1e-6)


# ----------------------------------------------------------------------------------- TD3
def make_td3(seed=0, **kw):
    torch.manual_seed(seed)
    return TD3(SPEC, TD3Config(hidden_dim=16, **kw))


def test_td3_delays_actor_and_target_updates_like_the_reference():
    agent = make_td3(policy_delay=2, tau=0.5)
    actor, target = params(agent.actor), params(agent.critic_target)
    m = agent.update(make_batch(), step=0)  # reference total_it = 1: critic only
    assert "actor_loss" not in m and same(actor, params(agent.actor)) and same(target, params(agent.critic_target))
    m = agent.update(make_batch(), step=1)  # total_it = 2: actor and targets move
    assert "actor_loss" in m and not same(actor, params(agent.actor))
    for old, new, online in zip(target, agent.critic_target.parameters(), agent.critic.parameters()):
        assert torch.allclose(new, 0.5 * old + 0.5 * online, atol=1e-6)


def test_td3_critic_target_and_clipped_smoothing_noise():
    agent = make_td3(policy_noise=100.0, noise_clip=0.5)
    agent.critic, agent.critic_target = ConstQ(1.0), ConstQ(2.0)
    agent.critic_opt = torch.optim.Adam(agent.critic.parameters(), lr=1e-3)
    seen = []
    original = agent.critic_target.forward
    agent.critic_target.forward = lambda o, a: (seen.append(a), original(o, a))[1]
    b = make_batch(reward=0.5)
    clean = agent.actor_target(b.next_obs)
    m = agent.update(b, step=0)
    assert m["critic_loss"].item() == pytest.approx(2 * (1.0 - (0.5 + 0.99 * 2.0)) ** 2, rel=1e-5)
    noise = seen[0] - clean
    assert noise.abs().max() <= 0.5 + 1e-6 and noise.abs().max() > 0.4  # huge noise, clipped at 0.5
    assert seen[0].abs().max() <= 1.0  # and the smoothed action stays in [-1, 1]


def test_td3_exploration_noise_scale_in_action_units():
    agent = make_td3(exploration_noise=0.1)
    obs = torch.zeros(4000, 3)
    torch.manual_seed(0)
    noisy = agent.act(obs) - agent.act(obs, deterministic=True)
    # 0.1 of the half-range (1.5) in each dimension; the actor starts near the box centre so clipping is rare.
    assert noisy.std(0).tolist() == pytest.approx([0.15, 0.15], rel=0.08)


# ----------------------------------------------------------------------------------- QVPO
def make_qvpo(seed=0, **kw):
    torch.manual_seed(seed)
    base = dict(hidden_dim=16, diffusion_steps=5, train_samples=6, eval_samples=6, behavior_samples=3, target_samples=3)
    return QVPO(SPEC, QVPOConfig(**{**base, **kw}))


def test_qvpo_defaults_are_the_official_ones():
    c = QVPOConfig()
    assert (c.diffusion_steps, c.beta_schedule, c.actor_lr, c.critic_lr, c.grad_clip) == (20, "cosine", 1e-4, 3e-4, 2.0)
    assert (c.train_samples, c.behavior_samples, c.target_samples, c.eval_samples) == (64, 4, 4, 32)
    assert (c.entropy_alpha, c.entropy_alpha_min, c.entropy_samples, c.tau) == (0.02, 0.002, 10, 0.005)


@pytest.mark.parametrize("name", ["cosine", "linear", "vp"])
def test_qvpo_beta_schedules_are_valid_noise_schedules(name):
    betas = beta_schedule(name, 20)
    assert betas.shape == (20,) and (betas > 0).all() and (betas <= 0.999).all()
    abar = torch.cumprod(1 - betas, 0)
    assert abar[0] > 0.9 and (abar[1:] < abar[:-1]).all()  # nearly clean at the start, then ever noisier
    if name != "linear":  # (the linear schedule is made for ~1000 steps; over 20 it ends at abar ~ 0.8)
        assert abar[-1] < 0.01
    if name == "cosine":  # closed form (Nichol & Dhariwal): abar_t = f((t + 1) / T) / f(0)
        f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        assert abar[9].item() == pytest.approx(f(10 / 20) / f(0), rel=1e-4)


class PointOracle(nn.Module):
    """The exact noise predictor for data that is the single point c."""

    def __init__(self, policy, c):
        super().__init__()
        self.policy, self.c = [policy], c  # (a list: not registered as a submodule)

    def forward(self, x, t, obs):
        p = self.policy[0]
        return (x - p.sqrt_abar[t, None] * self.c) / p.sqrt_one_minus_abar[t, None]


def test_qvpo_sampler_recovers_a_point_mass_with_the_oracle_denoiser():
    agent = make_qvpo(diffusion_steps=8)
    c = torch.tensor([0.3, -0.6])
    agent.actor.model = PointOracle(agent.actor, c)
    samples = agent.actor.sample(torch.zeros(100, 3))
    assert torch.allclose(samples, c.expand(100, 2), atol=1e-5)
    # ...and the denoising loss of that oracle on that point is zero.
    assert agent.actor.loss(c.expand(50, 2), torch.zeros(50, 3), torch.ones(50, 1)).item() == pytest.approx(0, abs=1e-8)


def test_qvpo_denoising_loss_is_linear_in_the_weights():
    agent = make_qvpo()
    a, s = torch.rand(32, 2) * 2 - 1, torch.randn(32, 3)
    torch.manual_seed(1)
    one = agent.actor.loss(a, s, torch.ones(32, 1))
    torch.manual_seed(1)
    three = agent.actor.loss(a, s, torch.full((32, 1), 3.0))
    torch.manual_seed(1)
    zero = agent.actor.loss(a, s, torch.zeros(32, 1))
    assert three.item() == pytest.approx(3 * one.item(), rel=1e-5) and zero.item() == 0.0


def test_qvpo_picks_the_best_candidate_per_state():
    actions = torch.tensor([[[0.1], [0.2]], [[0.3], [0.4]], [[0.5], [0.6]]])  # (n=3, B=2, A=1)
    q = torch.tensor([[[1.0], [9.0]], [[5.0], [2.0]], [[3.0], [4.0]]])
    best, q_best = QVPO.best(actions, q)
    assert best.flatten().tolist() == pytest.approx([0.3, 0.2]) and q_best.flatten().tolist() == [5.0, 9.0]


def test_qvpo_act_returns_the_candidate_the_critic_prefers():
    agent = make_qvpo(eval_samples=64)

    class PreferHigh(nn.Module):  # Q = first action coordinate
        def forward(self, obs, action):
            return action[:, :1], action[:, :1]

    agent.critic = PreferHigh()
    obs = torch.randn(4, 3)
    torch.manual_seed(0)
    chosen = agent.unscale_action(agent.act(obs, deterministic=True))
    torch.manual_seed(0)
    pool = agent.actor.sample(obs.repeat(64, 1)).view(64, 4, 2)
    assert torch.allclose(chosen[:, 0], pool[:, :, 0].max(0).values, atol=1e-5)


def test_qvpo_advantage_weights_vanish_under_a_flat_critic():
    agent = make_qvpo()
    agent.critic, agent.critic_target = ConstQ(1.0), ConstQ(1.0)
    agent.critic_opt = torch.optim.Adam(agent.critic.parameters(), lr=1e-3)
    before = params(agent.actor)
    m = agent.update(make_batch(), step=0)
    # Every sample has the same Q, so max Q - mean Q = 0: no weight, no loss, no actor change.
    assert m["advantage_mean"].item() == 0.0 and m["actor_loss"].item() == 0.0
    assert same(before, params(agent.actor))


def test_qvpo_critic_target_uses_the_target_networks():
    agent = make_qvpo()
    agent.critic, agent.critic_target = ConstQ(1.0), ConstQ(2.0)
    agent.critic_opt = torch.optim.Adam(agent.critic.parameters(), lr=1e-3)
    m = agent.update(make_batch(reward=0.5), step=0)
    assert m["critic_loss"].item() == pytest.approx(2 * (1.0 - (0.5 + 0.99 * 2.0)) ** 2, rel=1e-5)


def test_qvpo_entropy_weight_schedule():
    agent = make_qvpo(entropy_decay_updates=1000)
    assert agent.entropy_alpha(0) == pytest.approx(0.02)
    assert agent.entropy_alpha(500) == pytest.approx(0.01)
    assert agent.entropy_alpha(950) == pytest.approx(0.002)  # floor
    assert agent.entropy_alpha(10**7) == pytest.approx(0.002)


def test_qvpo_targets_move_every_update():
    agent = make_qvpo(tau=0.25)
    actor_t, critic_t = params(agent.actor_target), params(agent.critic_target)
    agent.update(make_batch(), 0)
    for old, new, online in zip(actor_t, agent.actor_target.parameters(), agent.actor.parameters()):
        assert torch.allclose(new, 0.75 * old + 0.25 * online, atol=1e-6)
    for old, new, online in zip(critic_t, agent.critic_target.parameters(), agent.critic.parameters()):
        assert torch.allclose(new, 0.75 * old + 0.25 * online, atol=1e-6)


# ----------------------------------------------------------------------------------- learning on a real task
from test_learning import random_policy_return  # noqa: E402 - shared with FlowRL's learning check

# CPU-sized budgets. SAC and TD3 move their targets slowly (tau 0.005), so they need more steps than FlowRL
# (tau 0.95; tests/test_learning.py) to propagate value over cartpole's long horizon. QVPO's defaults cost ~50x
# more per update than SAC's and, with tau 0.005 and critic lr 3e-4, it was still near random after 20k steps
# (265 -> 515, random 346 +- 43). Its check therefore uses small diffusion settings, a faster target (tau 0.05)
# and critic (lr 1e-3): seen 994 at 5k steps (~2 CPU-minutes). Every other line of its update is the default path.
# SAC and TD3 likewise train with a faster target (tau 0.05) so that the suite stays within its time budget: at the
# default tau 0.005 TD3 needed 60k steps (~3.5 CPU-minutes; seen 999, 992, 790, 860, 885, 961 from 55k to 80k).
# With tau 0.05: SAC seen 957 at 10k steps; TD3 seen 617, 659, 504, 916 at 15k-30k on an Intel CPU, but on an AMD
# EPYC (other float32 rounding, the same seed) 595 at 30k, 618 at 35k and 930 at 40k, so its check runs 40k steps
# (the check takes the best of the last two evaluations).
LEARNING_CASES = {
    "sac": (10000, ["agent.hidden_dim=64", "agent.tau=0.05"]),
    # TD3's targets move only on delayed steps, half as often as SAC's.
    "td3": (40000, ["agent.hidden_dim=64", "agent.tau=0.05"]),
    "qvpo": (
        7500,
        [
            "agent.hidden_dim=64",
            "agent.diffusion_steps=5",
            "agent.train_samples=8",
            "agent.eval_samples=8",
            "agent.tau=0.05",
            "agent.critic_lr=1e-3",
        ],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("algo", sorted(LEARNING_CASES))
def test_baseline_learns_cartpole_balance(algo, tmp_path):
    import csv

    from flowrl.cli import main as cli_main

    task = "dmc:cartpole-balance"
    rand_mean, rand_std = random_policy_return(task)  # ~350 +- 40
    steps, overrides = LEARNING_CASES[algo]
    out = tmp_path / "run"
    rc = cli_main(
        [
            "--algo",
            algo,
            "--task",
            task,
            "--seed",
            "0",
            "--steps",
            str(steps),
            "--out",
            str(out),
            "--no-progress",
            "start_steps=1000",
            "batch_size=128",
            f"eval_every={min(5000, steps // 3)}",
            "eval_episodes=3",
            "log_every=1000",
            "torch_threads=1",
            *overrides,
        ]
    )
    assert rc == 0
    returns = [float(r["return_mean"]) for r in csv.DictReader(open(out / "eval.csv"))]
    final = max(returns[-2:])
    assert final > rand_mean + 6 * rand_std and final > 1.5 * rand_mean, (returns, rand_mean, rand_std)
