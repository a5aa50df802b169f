"""Several seeds in one process (batched FlowRL) against single runs of the same seeds."""

import csv
import json
import signal
import threading

import numpy as np
import pytest
import torch

from flowrl.cli import main as cli_main

COMMON = (
    "--task dmc:cartpole-balance --steps 500 --no-progress start_steps=150 batch_size=32 "
    "eval_every=250 eval_episodes=1 log_every=50 agent.hidden_dim=16 torch_threads=1"
).split()


def returns(path):
    return [float(r["return_mean"]) for r in csv.DictReader(open(path / "eval.csv"))]


@pytest.fixture(scope="module")
def single_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    for s in (1, 2):
        assert cli_main([*COMMON, "--seed", str(s), "--out", str(root / f"seed{s}")]) == 0
    return root


def test_batched_seeds_match_single_runs(single_runs, tmp_path):
    """Tolerance: members differ from single runs only by float32 reduction order inside batched matmuls
    (~1e-7 relative per op). After 350 updates the parameters were seen to differ by ~1e-7, and returns by
    ~1e-5 relative; 1e-5 absolute on parameters and 1e-3 relative on returns leave ~100x margin while a
    different seed or a real bug changes returns by whole percents (and parameters by >1e-3)."""
    assert cli_main([*COMMON, "--seeds", "1", "2", "--out", str(tmp_path / "seed{seed}")]) == 0
    for s in (1, 2):
        ours, ref = tmp_path / f"seed{s}", single_runs / f"seed{s}"
        assert (ours / "DONE").exists()
        assert returns(ours) == pytest.approx(returns(ref), rel=1e-3)
        a, b = torch.load(ours / "final_agent.pt"), torch.load(ref / "final_agent.pt")
        for net in ("policy", "critic", "value"):
            for k in a[net]:
                assert torch.allclose(a[net][k], b[net][k], atol=1e-5), (net, k)
    assert returns(tmp_path / "seed1") != pytest.approx(returns(tmp_path / "seed2"), rel=1e-3)


def test_batched_seeds_with_env_processes_match_single_runs(single_runs, tmp_path):
    """Training environments in their own processes (stepped in parallel) change nothing."""
    assert cli_main([*COMMON, "--seeds", "1", "2", "--env-processes", "--out", str(tmp_path / "seed{seed}")]) == 0
    for s in (1, 2):
        assert returns(tmp_path / f"seed{s}") == pytest.approx(returns(single_runs / f"seed{s}"), rel=1e-3)


def test_parallel_evaluation_of_batched_seeds_matches_single_runs(tmp_path):
    """eval_envs=2: each run plays its 2 evaluation episodes at once (in this process on a 2-CPU machine; in
    environment processes given more CPUs: test_evaluation_in_environment_processes_changes_nothing); packed seeds
    get exactly their single runs' evaluations."""
    common = [*COMMON, "eval_every=500", "eval_episodes=2", "eval_envs=2"]
    assert cli_main([*common, "--seed", "2", "--out", str(tmp_path / "single")]) == 0
    assert cli_main([*common, "--seeds", "1", "2", "--out", str(tmp_path / "seed{seed}")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "single" / "eval.csv")))
    assert {r["episodes"] for r in rows} == {"2"} and len(rows) == 2
    assert returns(tmp_path / "seed2") == pytest.approx(returns(tmp_path / "single"), rel=1e-3)


def test_batched_seeds_resume_after_interrupt(single_runs, tmp_path):
    out = str(tmp_path / "seed{seed}")
    # Interrupt from a timer thread once training is under way, then resume with the same command.
    timer = threading.Timer(2.0, lambda: signal.raise_signal(signal.SIGTERM))
    timer.start()
    rc = cli_main([*COMMON, "--seeds", "1", "2", "--out", out])
    timer.cancel()
    if rc == 0:
        pytest.skip("the run finished before the interrupt arrived (machine too fast for this timing)")
    assert rc == 128 + signal.SIGTERM
    assert not (tmp_path / "seed1" / "DONE").exists()
    assert cli_main([*COMMON, "--seeds", "1", "2", "--out", out]) == 0
    for s in (1, 2):
        assert returns(tmp_path / f"seed{s}") == pytest.approx(returns(single_runs / f"seed{s}"), rel=1e-3)


def test_tasks_with_the_same_shapes_train_as_one_model_like_single_runs(single_runs, tmp_path):
    """--tasks: cartpole-balance and cartpole-swingup (same shapes) x 1 seed in one batched model; each run
    directory holds what the single run of that task and seed holds (same tolerance as above)."""
    common = COMMON[2:]  # without --task
    assert cli_main([*common, "--task", "dmc:cartpole-swingup", "--seed", "1", "--out", str(tmp_path / "swing")]) == 0
    assert (
        cli_main(
            [
                *common,
                "--tasks",
                "dmc:cartpole-balance",
                "dmc:cartpole-swingup",
                "--seeds",
                "1",
                "--out",
                str(tmp_path / "{task}" / "seed{seed}"),
            ]
        )
        == 0
    )
    balance, swingup = tmp_path / "dmc_cartpole-balance" / "seed1", tmp_path / "dmc_cartpole-swingup" / "seed1"
    assert returns(balance) == pytest.approx(returns(single_runs / "seed1"), rel=1e-3)
    assert returns(swingup) == pytest.approx(returns(tmp_path / "swing"), rel=1e-3)
    assert returns(balance) != pytest.approx(returns(swingup), rel=1e-3)
    import yaml

    assert yaml.safe_load((swingup / "config.yaml").read_text())["task"] == "dmc:cartpole-swingup"


def test_tasks_with_different_shapes_are_refused_before_anything_is_written(tmp_path, capsys):
    rc = cli_main(
        [
            *COMMON[2:],
            "--tasks",
            "dmc:cartpole-balance",
            "dmc:cheetah-run",
            "--seeds",
            "1",
            "--out",
            str(tmp_path / "{task}" / "seed{seed}"),
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "same observation and action shapes" in err and "dmc:cheetah-run: obs 17, act 6" in err
    assert not any(tmp_path.iterdir())


def test_runs_stopped_at_different_steps_train_in_groups(single_runs, tmp_path, monkeypatch):
    """Seed 2 interrupted part-way as a single run, seed 1 not started: a packed command finishes both (in
    lockstep groups of equal steps), each exactly its single run."""
    import subprocess
    import sys
    import time

    out = tmp_path / "seed{seed}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowrl", *COMMON, "--seed", "2", "--out", str(tmp_path / "seed2")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        rows = (
            list(csv.DictReader(open(tmp_path / "seed2" / "train.csv")))
            if (tmp_path / "seed2" / "train.csv").exists()
            else []
        )
        if rows and int(rows[-1]["step"]) >= 200 or proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    if (tmp_path / "seed2" / "DONE").exists():
        pytest.skip("the run finished before the interrupt arrived")

    # A signal while the first group (seed 1, from step 0) trains: seed 2's group is left as it was.
    def checkpoints():
        return {p.name: p.stat().st_mtime_ns for p in (tmp_path / "seed2" / "checkpoints").iterdir()}

    before = checkpoints()
    from flowrl.train import Training

    evaluate = Training.evaluate

    def evaluate_then_signal(training, record=None):  # SIGTERM right after group 1's first evaluation
        evaluate(training, record)
        signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(Training, "evaluate", evaluate_then_signal)
    rc = cli_main([*COMMON, "--seeds", "1", "2", "--out", str(out)])
    monkeypatch.undo()
    assert rc == 128 + signal.SIGTERM and not (tmp_path / "seed1" / "DONE").exists()
    assert checkpoints() == before  # no checkpoint written (nor rewritten) for the untrained group
    assert json.loads((tmp_path / "seed2" / "manifest.json").read_text())["sessions"][-1]["stopped_by_signal"]

    assert cli_main([*COMMON, "--seeds", "1", "2", "--out", str(out)]) == 0
    for s in (1, 2):
        assert returns(tmp_path / f"seed{s}") == pytest.approx(returns(single_runs / f"seed{s}"), rel=1e-3)


def test_batched_seeds_refuse_agents_without_member_support(tmp_path, capsys):
    rc = cli_main(["--algo", "sac", *COMMON, "--seeds", "1", "2", "--out", str(tmp_path / "s{seed}")])
    assert rc == 2 and "train each task and seed as its own run" in capsys.readouterr().err


class _FallingEnv:
    """A 3-d toy task whose episodes end when the state leaves a box: episode lengths differ between seeds and
    depend on the actions, so lockstep evaluation must keep each seed's actions and noise exactly its own."""

    def __init__(self):
        import numpy as np

        from flowrl.agents.base import EnvSpec

        self.np = np
        self.spec = EnvSpec(3, 2, np.full(2, -1.0, np.float32), np.ones(2, np.float32))
        self.max_episode_steps = 40

    def reset(self, seed):
        self.rng = self.np.random.default_rng(seed)
        self.x, self.t = self.rng.uniform(-0.5, 0.5, 3).astype(self.np.float32), 0
        return self.x.copy()

    def step(self, action):
        from flowrl.envs.base import Step

        self.t += 1
        self.x = (
            self.x
            + 0.3 * self.np.array([action[0], action[1], action[0] * action[1]], self.np.float32)
            + 0.1 * self.rng.standard_normal(3).astype(self.np.float32)
        )
        fell = bool(self.np.abs(self.x).max() > 1.0)
        return Step(self.x.copy(), float(1.0 - self.np.abs(self.x).sum()), fell, self.t >= self.max_episode_steps, {})


@pytest.mark.parametrize("n_envs", [1, 3])
def test_lockstep_evaluation_gives_each_seed_its_single_run_evaluation(n_envs):
    """Seeds evaluated together (each on n_envs environments at once) see exactly their single runs' episodes:
    same episode seeds, same policy noise, even as episodes end at different steps in different seeds."""
    from flowrl.agents.base import OneMember
    from flowrl.agents.flowrl import FlowRL, FlowRLConfig
    from flowrl.evaluation import evaluation_episodes, evaluation_policy

    spec = _FallingEnv().spec
    cfg = FlowRLConfig(hidden_dim=16)
    singles = []
    for s in (3, 4, 5):
        torch.manual_seed(s)
        singles.append(FlowRL(spec, cfg))
    packed = FlowRL.stack([a.state_dict() for a in singles], spec, cfg)
    seeds, episodes = [3, 4, 5], 4  # with 3 environments: a wave of 3 episodes, then one of 1

    alone = []
    for agent, seed in zip(singles, seeds):
        agent.seed_evaluation(100 + seed)
        alone.append(
            evaluation_episodes(
                [[_FallingEnv() for _ in range(n_envs)]],
                [seed],
                episodes,
                evaluation_policy(OneMember(agent), agent.device),
            )[0]
        )

    packed.seed_evaluation_members([100 + s for s in seeds])
    lengths = []

    def act(obs, active):
        lengths.append(sum(map(sum, active)))
        batch = torch.as_tensor(np.stack([np.stack(o) for o in obs]))
        return list(packed.act_members(batch, deterministic=True, members=active).numpy())

    together = evaluation_episodes([[_FallingEnv() for _ in range(n_envs)] for _ in seeds], seeds, episodes, act)
    assert len(set(lengths)) > 2, "the toy task should end episodes at different steps"
    for (r1, _), (r2, _) in zip(alone, together):
        assert len(r2) == episodes
        assert r2 == pytest.approx(r1, rel=1e-4, abs=1e-4)  # reduction order only (see the test above)
    assert together[0][0] != pytest.approx(together[1][0], rel=1e-3)


def test_parallel_evaluation_plays_the_same_episodes_in_the_same_order():
    """With a noiseless evaluation policy, playing episodes k at a time changes nothing but speed: episode e
    starts from the same seed and its return lands at position e, whatever k (k > episodes included)."""
    from flowrl.agents.base import OneMember
    from flowrl.agents.flowrl import FlowRL, FlowRLConfig
    from flowrl.evaluation import evaluation_episodes, evaluation_policy

    torch.manual_seed(0)
    agent = FlowRL(_FallingEnv().spec, FlowRLConfig(hidden_dim=16, eval_noise="zero"))
    act = evaluation_policy(OneMember(agent), agent.device)
    by_k = {k: evaluation_episodes([[_FallingEnv() for _ in range(k)]], [7], 5, act)[0][0] for k in (1, 2, 5, 6)}
    assert len(set(by_k[1])) == 5, "episodes should differ from one another"
    for k, returns in by_k.items():
        assert returns == pytest.approx(by_k[1], rel=1e-5, abs=1e-5), k


def test_evaluation_in_environment_processes_changes_nothing():
    """The same episodes in worker processes (stepped in parallel) as in this process; a worker ignores the
    Ctrl-C / SIGTERM that reaches the whole process group (the trainer handles it, then closes its workers)."""
    import os

    from flowrl.agents.base import OneMember
    from flowrl.agents.flowrl import FlowRL, FlowRLConfig
    from flowrl.envs import make_env
    from flowrl.evaluation import evaluation_episodes, evaluation_policy
    from flowrl.subproc_env import subproc_envs

    task = "dmc:cartpole-swingup"
    local = [make_env(task) for _ in range(2)]
    workers = subproc_envs(task, 2)
    try:
        os.kill(workers[0]._proc.pid, signal.SIGINT)
        os.kill(workers[1]._proc.pid, signal.SIGTERM)
        results = []
        for envs in (local, workers):
            torch.manual_seed(0)
            agent = FlowRL(local[0].spec, FlowRLConfig(hidden_dim=16))
            agent.seed_evaluation(5)
            results.append(evaluation_episodes([envs], [3], 3, evaluation_policy(OneMember(agent), agent.device))[0][0])
        assert len(results[0]) == 3 and results[1] == pytest.approx(results[0], rel=1e-6)
    finally:
        for env in local + workers:
            env.close()
    assert not any(w._proc.is_alive() for w in workers)


def test_a_process_with_environment_workers_exits_after_an_error(tmp_path):
    """Workers ignore SIGTERM, the signal multiprocessing ends them with at exit: without our exit hook a trainer
    that fails with workers alive would hang at exit (a GPU job would sit there until its time limit)."""
    import subprocess
    import sys

    script = tmp_path / "fail.py"
    script.write_text(
        "from flowrl.subproc_env import SubprocEnv\n"
        "if __name__ == '__main__':\n"
        "    env = SubprocEnv('dmc:cartpole-balance')\n"
        "    raise RuntimeError('boom')\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "RuntimeError: boom" in proc.stderr


def test_act_members_mask_is_for_evaluation_only():
    from flowrl.agents.flowrl import FlowRL, FlowRLConfig

    agent = FlowRL(_FallingEnv().spec, FlowRLConfig(hidden_dim=8), n_seeds=2)
    with pytest.raises(ValueError, match="for evaluation"):
        agent.act_members(torch.zeros(2, 1, 3), deterministic=False, members=[True, False])
