"""Executes docs/adding-a-baseline.md: its code blocks must match examples/my_agent.py and actually work
(registration, the conformance suite, a short flowrl-train run, and the study config)."""

import csv
import re
import shlex
from pathlib import Path

import pytest
import tomllib
import yaml

from flowrl.agents import registry

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "adding-a-baseline.md"
EXAMPLE = ROOT / "examples" / "my_agent.py"


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def myagent_registered(monkeypatch):
    """Step 3 of the doc, its first option: one line in BUILTIN_AGENTS (module path adapted to examples/)."""
    line = next(b for b in blocks("python") if "BUILTIN_AGENTS" not in b and b.strip().startswith('"myagent"'))
    name, target = re.match(r'\s*"(\w+)":\s*"([\w.:]+)",', line).groups()
    assert (name, target) == ("myagent", "baselines.my_agent:MyAgent")
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    monkeypatch.setitem(registry.BUILTIN_AGENTS, name, target.replace("baselines.my_agent", "my_agent"))
    return name


def test_the_doc_shows_the_example_file_faithfully():
    """Every line of the doc's agent excerpt appears in examples/my_agent.py, in the same order."""
    excerpt = next(b for b in blocks("python") if "class MyAgent(Agent)" in b)
    source = [line.rstrip() for line in EXAMPLE.read_text().splitlines()]
    pos = 0
    for line in filter(str.strip, excerpt.splitlines()):
        assert line.rstrip() in source[pos:], f"doc line not in examples/my_agent.py (in order): {line!r}"
        pos = source.index(line.rstrip(), pos) + 1


def test_registration_options_name_the_real_mechanisms(myagent_registered):
    assert myagent_registered in registry.available_agents()
    assert registry.get_agent_class("myagent").__name__ == "MyAgent"
    (toml_block,) = blocks("toml")
    assert registry.ENTRY_POINT_GROUP in tomllib.loads(toml_block)["project"]["entry-points"]


def test_conformance_blocks_run(myagent_registered, capsys):
    for code in blocks("python"):
        if "flowrl.testing" in code:
            namespace = {}
            exec(compile(code, str(DOC), "exec"), namespace)
    out = capsys.readouterr().out
    assert out.count("ok  ") == 7 and "FAIL" not in out
    assert callable(namespace["test_myagent_conformance"])


def test_train_command_runs(myagent_registered, tmp_path):
    from flowrl.cli import main as cli_main

    (bash,) = [b for b in blocks("bash") if "flowrl-train" in b]
    argv = shlex.split(bash.replace("\\\n", " "))
    assert argv[0] == "flowrl-train" and argv[argv.index("--algo") + 1] == "myagent"
    args = argv[1:]
    args[args.index("--steps") + 1] = "1200"  # the doc's budget, shrunk to test size
    args[args.index("--out") + 1] = str(tmp_path / "run")
    tiny = (
        "--no-progress start_steps=300 eval_every=600 eval_episodes=1 batch_size=32 agent.hidden_dim=16 "
        "torch_threads=1 log_every=300"
    ).split()
    assert cli_main(args + tiny) == 0
    rows = list(csv.DictReader(open(tmp_path / "run" / "eval.csv")))
    assert [int(r["step"]) for r in rows] == [0, 600, 1200]
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["algo"] == "myagent" and config["agent"]["exploration_noise"] == 0.2


def test_study_config_is_valid_and_includes_the_agent(myagent_registered):
    from flowrl.study import load_study

    (block,) = blocks("yaml")
    study = load_study(yaml.safe_load(block))  # schema, names and agent settings checked
    algos = {job.algo for job in study.jobs()}
    assert {"myagent", "myagent-noisy"} <= algos
    noisy = next(j for j in study.jobs() if j.algo == "myagent-noisy")
    assert noisy.base_algo == "myagent"
