"""bench/official_equivalence.py: our FlowRL update against the official code, number by number.

The comparison itself needs a checkout of github bytedance/FlowRL, which this repository does not ship:
set FLOWRL_OFFICIAL=/path/to/FlowRL to run it (e.g. git clone https://github.com/bytedance/FlowRL). The
script's failure mode for a path that is no official checkout is tested always.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "official_equivalence.py"
OFFICIAL = os.environ.get("FLOWRL_OFFICIAL")
needs_official = pytest.mark.skipif(
    not OFFICIAL,
    reason="set FLOWRL_OFFICIAL to a checkout of github bytedance/FlowRL to compare against it "
    "(git clone https://github.com/bytedance/FlowRL)",
)

sys.path.insert(0, str(ROOT / "bench"))
import official_equivalence as oe  # noqa: E402


def _run(*args, cwd=ROOT):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


@pytest.mark.subprocess
def test_a_path_that_is_not_an_official_checkout_is_named_with_the_fix(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "algo.py").write_text("x = 1\n")
    proc = _run("--official", str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "is not a checkout of github bytedance/FlowRL" in proc.stderr
    assert "model/model.py" in proc.stderr and "git clone https://github.com/bytedance/FlowRL" in proc.stderr
    assert "VERDICT" not in proc.stdout  # no table for something that was not compared

    proc = _run("--official", str(tmp_path / "absent"))
    assert proc.returncode == 2 and "no such directory" in proc.stderr


@pytest.mark.subprocess
def test_a_checkout_whose_code_is_not_the_official_one_is_refused(tmp_path):
    """All files present but model/algo.py defines no flowAC: an error naming what is missing, exit 2."""
    for f in oe.OFFICIAL_FILES:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("")
    (tmp_path / "utilis" / "default_config.py").write_text("default_config = Config({'gamma': 0.99})\n")
    proc = _run("--official", str(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "model/algo.py: flowAC" in proc.stderr and "does not look like the official FlowRL code" in proc.stderr


def test_draws_are_served_in_order_and_a_different_order_is_an_error():
    import torch

    draws = oe.Draws()
    a, b = torch.zeros(2, 3), torch.ones(2, 1)
    draws.push("randn_like", "a_0", a)
    draws.push("rand", "t", b)
    assert torch.equal(draws.take("randn_like", (2, 3)), a)
    with pytest.raises(oe.DrawOrderError, match=r"drew torch.normal\(2, 1\) where our update draws t"):
        draws.take("normal", (2, 1))
    draws.push("rand", "t", b)
    with pytest.raises(oe.DrawOrderError, match="did not draw"):
        draws.check_empty("update 0")


def test_parameter_rows_allow_only_what_adam_makes_of_the_gradient_rounding():
    import torch

    before = [torch.zeros(4)]
    official = [torch.tensor([3e-4, -3e-4, 3e-4, 1e-4])]
    ours = [official[0].clone()]
    ours[0][3] = -1e-4  # a value whose two gradients straddle 0: Adam steps it both ways
    explained = [torch.tensor([0.0, 0.0, 0.0, 2e-4]).double()]
    row = oe.parameter_row("p", ours, official, before, explained)
    assert row.ok and row.max_abs == pytest.approx(2e-4) and "1 values with gradients at rounding level" in row.note
    row = oe.parameter_row("p", ours, official, before, [torch.zeros(4).double()])
    assert not row.ok  # the same difference with no gradient rounding to explain it fails


@needs_official
@pytest.mark.subprocess
def test_our_update_equals_the_official_update():
    proc = _run("--official", OFFICIAL, "--hidden", "64", "--batch", "64", "--updates", "4")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "VERDICT: EQUIVALENT" in out
    for quantity in (
        "critic outputs",
        "policy_loss",
        "flow-matching weights w",
        "critic gradient",
        "buffer_critic_target soft-updated target parameters",
        "policy parameters after Adam",
        "acting with fixed noise (evaluation)",
        "policy parameters (unchanged)",
    ):
        assert quantity in out, quantity


@needs_official
@pytest.mark.parametrize(
    "change, caught",
    [
        ({"flow_loss": "per_sample"}, "flow-matching term w * MSE"),
        ({"lambda_placement": "multiplier"}, "flow-matching weights w"),
        ({"quantile": 0.8}, "value_loss"),
    ],
)
def test_a_changed_update_is_caught(change, caught):
    """The paper's variants (our options) are not the official update: the comparison must say so."""
    rows, _ = oe.run_check(
        OFFICIAL, hidden=32, batch=32, updates=2, act_states=1, log=lambda m: None, agent_overrides=change
    )
    bad = {r.quantity.split(": ", 1)[-1] for r in rows if not r.ok}
    assert caught in bad, sorted(bad)
