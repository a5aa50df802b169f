"""Environment adapters and task names (flowrl.envs)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import numpy as np
import pytest

from flowrl.envs import SuiteNotInstalledError, list_tasks, make_env, task_slug, validate_task

HB_INSTALLED = importlib.util.find_spec("humanoid_bench") is not None


def newest_gym(base: str) -> str:
    """The newest registered version of a gymnasium MuJoCo task (v5 on gymnasium 1.x, v4 on HumanoidBench's 0.29)."""
    from gymnasium.envs.registration import registry

    versions = [int(i.rsplit("-v", 1)[1]) for i in registry if i.rsplit("-v", 1)[0] == base]
    return f"gym:{base}-v{max(versions)}"


def run_episode(env, seed, policy, max_steps=10_000):
    """Returns (observations, rewards, last Step) of one episode."""
    obs, rewards = [env.reset(seed)], []
    for t in range(max_steps):
        step = env.step(policy(t))
        obs.append(step.obs)
        rewards.append(step.reward)
        if step.terminated or step.truncated:
            return obs, rewards, step
    raise AssertionError(f"{env.name} did not end within {max_steps} steps")


# ------------------------------------------------------------------------------------------ names
@pytest.mark.subprocess
def test_importing_flowrl_envs_loads_no_simulator():
    code = (
        "import sys, flowrl.envs; "
        "print([m for m in ('dm_control', 'gymnasium', 'humanoid_bench', 'mujoco') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize(
    "name,expected",
    [
        ("dmc:cartpole-balanse", "'dmc:cartpole-balance'"),
        ("dmc:cheetah-runn", "'dmc:cheetah-run'"),
        ("dmc:Cheetah-Run", "'dmc:cheetah-run'"),
        ("cheetah-run", "'dmc:cheetah-run'"),  # no suite prefix
        ("DMC:walker-walk", "'dmc:walker-walk'"),
        ("gym:Hoper-v4", "'gym:Hopper-v4'"),
        ("hb:h1hand-wak-v0", "'hb:h1hand-walk-v0'"),
        ("gym:h1hand-walk-v0", "use 'hb:h1hand-walk-v0'"),
    ],
)
def test_unknown_names_suggest_close_valid_ones(name, expected):
    with pytest.raises(ValueError) as err:
        validate_task(name)
    assert expected in str(err.value)


def test_unknown_suite_names_the_valid_prefixes():
    with pytest.raises(ValueError) as err:
        validate_task("foo:bar")
    message = str(err.value)
    assert "'foo'" in message and all(p in message for p in ("dmc:", "gym:", "hb:"))


@pytest.mark.parametrize("name", ["", "dmc:", "dmc:cartpole", None])
def test_malformed_names_are_rejected(name):
    with pytest.raises(ValueError):
        validate_task(name)


def test_hb_registered_but_unbuildable_id_points_to_the_robots_that_have_it():
    with pytest.raises(ValueError) as err:
        validate_task("hb:h1-kitchen-v0")
    assert "hb:h1hand-kitchen-v0" in str(err.value) and "cannot be built" in str(err.value)


def test_dmc_names_cover_the_whole_suite():
    from dm_control import suite

    names = list_tasks("dmc")
    assert names == [f"dmc:{d}-{t}" for d, t in suite.ALL_TASKS]
    assert {"dmc:point_mass-easy", "dmc:ball_in_cup-catch", "dmc:humanoid_CMU-run", "dmc:dog-run"} <= set(names)
    assert all(validate_task(n) == n for n in names)


def test_gym_names():
    names = list_tasks("gym")
    assert {newest_gym("Humanoid"), newest_gym("HalfCheetah"), "gym:Hopper-v4"} <= set(names)
    assert all(validate_task(n) == n for n in names)
    assert validate_task("gym:MountainCarContinuous-v0")  # any registered id; its spaces are checked at make


def test_hb_names_validate_without_humanoid_bench():
    names = list_tasks("hb")
    assert len(names) == len(set(names)) > 100
    assert {"hb:h1hand-walk-v0", "hb:h1-crawl-v0", "hb:h1strong-highbar_hard-v0", "hb:g1-walk-v0"} <= set(names)
    assert all(validate_task(n) == n for n in names)
    with pytest.raises(ValueError):
        list_tasks("atari")


def test_task_slugs_are_filesystem_safe_and_distinct():
    assert task_slug("dmc:cartpole-balance") == "dmc_cartpole-balance"
    assert task_slug("dmc:point_mass-easy") == "dmc_point_mass-easy"
    assert task_slug("gym:ALE/Pong-v5") == "gym_ALE_Pong-v5"
    names = list_tasks()
    slugs = [task_slug(n) for n in names]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", s) for s in slugs)
    assert len(set(slugs)) == len(names)
    with pytest.raises(ValueError):
        task_slug("nosuite")


def test_missing_dm_control_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "dm_control.suite", None)  # makes `import dm_control.suite` fail
    with pytest.raises(SuiteNotInstalledError) as err:
        validate_task("dmc:cartpole-balance")
    assert isinstance(err.value, ValueError) and "requirements/lock-cpu.txt" in str(err.value)
    assert validate_task("hb:h1hand-walk-v0") == "hb:h1hand-walk-v0"  # static list: still fine


# ------------------------------------------------------------------------------------------- DMC
@pytest.mark.parametrize(
    "name,obs_dim,act_dim",
    [
        ("dmc:cartpole-balance", 5, 1),
        ("dmc:walker-walk", 24, 6),
        ("dmc:cheetah-run", 17, 6),
        ("dmc:point_mass-easy", 4, 2),
        ("dmc:ball_in_cup-catch", 8, 2),
        ("dmc:dog-run", 223, 38),
    ],
)
def test_dmc_specs_and_flat_float32_observations(name, obs_dim, act_dim):
    env = make_env(name)
    assert (env.spec.obs_dim, env.spec.act_dim) == (obs_dim, act_dim)
    assert env.max_episode_steps == 1000 and env.has_success is False
    assert np.all(env.spec.act_low == -1) and np.all(env.spec.act_high == 1)
    obs = env.reset(0)
    assert obs.dtype == np.float32 and obs.shape == (obs_dim,)
    step = env.step(np.zeros(act_dim))
    assert step.obs.dtype == np.float32 and step.obs.shape == (obs_dim,) and isinstance(step.reward, float)


def test_dmc_observation_matches_dm_control_in_key_order():
    from dm_control import suite

    raw = suite.load("walker", "walk", task_kwargs={"random": 11}).reset().observation
    expected = np.concatenate([np.asarray(v, dtype=np.float32).reshape(-1) for v in raw.values()])
    np.testing.assert_array_equal(make_env("dmc:walker-walk").reset(11), expected)


def test_dmc_truncates_at_its_time_limit_never_terminates():
    env = make_env("dmc:cartpole-balance")
    for seed in (0, 1):  # the second episode too: the step counter restarts at reset
        obs, rewards, last = run_episode(env, seed, lambda t: np.ones(1))
        assert len(rewards) == 1000 and last.truncated and not last.terminated
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1))


@pytest.mark.parametrize("name", ["dmc:walker-walk", "dmc:point_mass-easy"])
def test_dmc_reset_is_a_pure_function_of_the_seed(name):
    env = make_env(name)
    first = env.reset(7)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (30, env.spec.act_dim))
    trajectory = [env.step(a).obs for a in actions]
    assert not np.array_equal(env.reset(8), first)
    for _ in range(5):
        env.step(rng.uniform(-1, 1, env.spec.act_dim))
    np.testing.assert_array_equal(env.reset(7), first)
    np.testing.assert_array_equal([env.step(a).obs for a in actions], trajectory)  # same seed+actions: same episode
    np.testing.assert_array_equal(make_env(name).reset(7), first)  # a fresh env agrees


def test_dmc_actions_are_clipped_and_checked():
    env = make_env("dmc:cartpole-balance")
    env.reset(3)
    big = env.step(np.array([5.0]))
    assert env.physics.data.ctrl[0] == 1.0
    env.reset(3)
    np.testing.assert_array_equal(env.step(np.array([1.0])).obs, big.obs)
    with pytest.raises(ValueError, match="1 values"):
        env.step(np.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([np.nan]))
    for bad_seed in (-1, 2**32, 1.5):
        with pytest.raises(ValueError, match="seed"):
            env.reset(bad_seed)


def test_dmc_true_terminal_state_is_terminated():
    env = make_env("dmc:lqr-lqr_2_1")  # the one suite task with terminal states (discount 0) and no time limit
    assert env.max_episode_steps is None
    env.reset(0)
    with env.physics.reset_context():  # put it at the goal: the next step terminates
        env.physics.data.qpos[:] = 0
        env.physics.data.qvel[:] = 0
    step = env.step(np.zeros(env.spec.act_dim))
    assert step.terminated and not step.truncated


# --------------------------------------------------------------------------------------- gymnasium
def test_gym_termination_and_truncation_pass_through():
    hopper = make_env(newest_gym("Hopper"))
    assert (hopper.spec.obs_dim, hopper.spec.act_dim, hopper.max_episode_steps) == (11, 3, 1000)
    rng = np.random.default_rng(0)
    obs, rewards, last = run_episode(hopper, 0, lambda t: rng.uniform(-1, 1, 3))
    assert last.terminated and not last.truncated and len(rewards) < 1000
    assert obs[0].dtype == np.float32 and hopper.has_success is False and "success" not in last.info

    reacher = make_env(newest_gym("Reacher"))  # never terminates; 50-step limit
    obs, rewards, last = run_episode(reacher, 0, lambda t: np.zeros(2))
    assert len(rewards) == reacher.max_episode_steps == 50 and last.truncated and not last.terminated


def test_gym_reset_is_pure_and_actions_clipped():
    env = make_env(newest_gym("InvertedPendulum"))  # action bounds [-3, 3]
    assert env.spec.act_high[0] == 3.0
    first = env.reset(5)
    a = env.step(np.array([10.0])).obs
    assert not np.array_equal(env.reset(6), first)
    np.testing.assert_array_equal(env.reset(5), first)
    np.testing.assert_array_equal(env.step(np.array([3.0])).obs, a)


def test_gym_rejects_discrete_actions():
    with pytest.raises(ValueError, match="Box"):
        make_env("gym:CartPole-v1")


class _GoalEnv:
    """A tiny gymnasium env that reports is_success and draws its start from numpy's global RNG."""

    def __new__(cls):
        import gymnasium

        class GoalEnv(gymnasium.Env):
            observation_space = gymnasium.spaces.Dict(
                {"pos": gymnasium.spaces.Box(-9, 9, (2,)), "goal": gymnasium.spaces.Box(-9, 9, (1,))}
            )
            action_space = gymnasium.spaces.Box(-1, 1, (2,))

            def reset(self, seed=None, options=None):
                super().reset(seed=seed)
                self.pos = np.random.uniform(-1, 1, 2)  # global RNG, like some HumanoidBench tasks
                return self._obs(), {}

            def _obs(self):
                return {"pos": self.pos.copy(), "goal": np.zeros(1)}

            def step(self, action):
                self.pos = self.pos + action
                return self._obs(), 0.0, False, False, {"is_success": bool(np.all(np.abs(self.pos) < 0.5))}

        return GoalEnv()


def test_gym_success_flag_and_global_rng_isolation():
    from flowrl.envs.gym import GymEnv

    env = GymEnv("GoalEnv", env=_GoalEnv(), isolate_global_rng=True)
    assert env.has_success and env.spec.obs_dim == 3
    np.random.seed(1)
    caller_state = np.random.get_state()[1].copy()
    first = env.reset(4)  # flattened Dict: [goal, pos]
    step = env.step(-first[1:])  # move to the origin
    assert step.info["success"] == 1.0 and isinstance(step.info["success"], float)
    env.reset(5)
    np.testing.assert_array_equal(env.reset(4), first)
    np.testing.assert_array_equal(np.random.get_state()[1], caller_state)  # the caller's global RNG is untouched

    shared = GymEnv("GoalEnv", env=_GoalEnv())  # without isolation the start depends on the global RNG
    a = shared.reset(4)
    assert not np.array_equal(shared.reset(4), a)


# ---------------------------------------------------------------------------------- HumanoidBench
@pytest.mark.skipif(HB_INSTALLED, reason="humanoid_bench is importable here")
def test_making_hb_without_humanoid_bench_says_how_to_install():
    with pytest.raises(SuiteNotInstalledError) as err:
        make_env("hb:h1hand-walk-v0")
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    for needed in ("requirements/humanoidbench.txt", "environment-humanoidbench.yml", "MUJOCO_GL"):
        assert needed in message


def test_hb_on_the_wrong_stack_says_so(monkeypatch):
    import importlib.metadata

    from flowrl.envs import humanoidbench

    if importlib.metadata.version("mujoco").startswith("3.1."):
        pytest.skip("this Python has HumanoidBench's mujoco")
    monkeypatch.setattr(humanoidbench.importlib.util, "find_spec", lambda name: object())
    with pytest.raises(SuiteNotInstalledError, match="does not work with mujoco"):
        humanoidbench.import_humanoid_bench()


@pytest.mark.skipif(not HB_INSTALLED, reason="needs HumanoidBench's stack (requirements/humanoidbench.txt)")
def test_hb_walk_in_its_own_stack():
    env = make_env("hb:h1hand-walk-v0")
    assert (env.spec.obs_dim, env.spec.act_dim, env.max_episode_steps) == (151, 61, 1000)
    first = env.reset(1)
    assert first.dtype == np.float32
    rng = np.random.default_rng(0)
    obs, rewards, last = run_episode(env, 2, lambda t: rng.uniform(-1, 1, 61))
    assert last.terminated or last.truncated
    np.testing.assert_array_equal(env.reset(1), first)
