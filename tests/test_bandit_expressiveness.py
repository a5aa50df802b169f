"""The bandit expressiveness example (paper Fig. 2): mode coverage of each policy, and the figure."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bandit_expressiveness.py"


@pytest.fixture(scope="module")
def bx():
    spec = importlib.util.spec_from_file_location("bandit_expressiveness", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def result(bx):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return bx.run(bx.TrainSettings(steps=2500), n_data=4000, n_samples=2000, seed=0)
    finally:
        torch.set_num_threads(threads)


def test_reward_favours_exactly_the_high_value_modes(bx):
    values = bx.reward(bx.mode_centers())
    high = list(bx.HIGH_VALUE_MODES)
    low = [k for k in range(bx.N_MODES) if k not in high]
    assert values[high].min() > 0.9 and values[low].max() < 0.2
    assert bx.reward(torch.zeros(1, 2)).item() < 1e-3  # nothing between the modes


def test_mode_masses_count_samples_per_mode(bx):
    centers = bx.mode_centers()
    samples = torch.cat([centers[[0]].repeat(30, 1), centers[[4]].repeat(10, 1), torch.zeros(60, 2)])
    masses = bx.mode_masses(samples)
    assert masses[0].item() == pytest.approx(0.3) and masses[4].item() == pytest.approx(0.1)
    assert masses.sum().item() == pytest.approx(0.4)  # samples at the centre belong to no mode


def test_unguided_flow_copies_the_buffer(result):
    st = result["stats"]["unguided flow"]
    assert st["modes_covered"] >= 8
    assert st["mass_on_high_value_modes"] < 0.5  # about 3/10 of the mass, like the buffer


def test_value_guided_flow_keeps_several_high_value_modes(result):
    st, buffer = result["stats"]["value-guided flow"], result["stats"]["buffer"]
    assert st["mass_on_high_value_modes"] > 0.7
    assert st["high_modes_covered"] >= 2  # multimodal: more than one good mode survives
    assert st["mean_reward"] > 2 * buffer["mean_reward"]


def test_gaussian_policy_collapses_to_one_mode(result):
    masses = torch.tensor(result["stats"]["Gaussian"]["masses"])
    assert result["stats"]["Gaussian"]["modes_covered"] == 1
    assert masses.max() > 0.8


def test_figure_is_written_and_existing_files_are_not_overwritten(bx, result, tmp_path):
    out = bx.plot(result, tmp_path / "fig.png")
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):  # main() refuses to overwrite without --force
        bx.main(["--out", str(out), "--steps", "1"])
