"""Replay buffer stored as preallocated tensors on the training device, sampled there in one batch."""

from __future__ import annotations

import torch

from flowrl.agents.base import Batch

FIELDS = ("obs", "action", "reward", "next_obs", "not_done")
SPLITS = ("official", "round")


class ReplayBuffer:
    """A ring buffer of transitions.

    `sample` draws `(1 - recent_fraction) * B` indices uniformly over the whole buffer and the rest
    uniformly from the most recent `recent_window` transitions (the official FlowRL code uses 0.2 and
    2048; 0 gives plain uniform replay). Indices are drawn with replacement by the buffer's own
    generator (the official code samples without replacement; with B=256 out of >=5000 the two differ
    negligibly).

    `split` rounds the two parts: "official" takes floor(B * (1 - recent_fraction)) uniform indices and the rest
    recent, as the official code's int(batch_size * 0.8) (204 + 52 at B=256); "round" takes
    round(B * recent_fraction) recent ones (205 + 51), what runs written before this option did.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        capacity: int,
        device: torch.device | str = "cpu",
        recent_fraction: float = 0.0,
        recent_window: int = 2048,
        seed: int = 0,
        split: str = "official",
    ):
        if capacity <= 0:
            raise ValueError(f"replay capacity must be positive, got {capacity}")
        if not 0.0 <= recent_fraction <= 1.0:
            raise ValueError(f"recent_fraction must be in [0, 1], got {recent_fraction}")
        if recent_window <= 0:
            raise ValueError(f"recent_window must be positive, got {recent_window}")
        if split not in SPLITS:
            raise ValueError(f"replay split {split!r}: choose one of {SPLITS}")
        self.capacity, self.device = capacity, torch.device(device)
        self.recent_fraction, self.recent_window, self.split = recent_fraction, recent_window, split
        dims = {"obs": obs_dim, "action": act_dim, "reward": 1, "next_obs": obs_dim, "not_done": 1}
        self.data = {k: torch.zeros(capacity, d, dtype=torch.float32, device=self.device) for k, d in dims.items()}
        self.ptr = 0  # next write position
        self.size = 0
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward: float, next_obs, terminated: bool) -> None:
        row = {
            "obs": obs,
            "action": action,
            "reward": reward,
            "next_obs": next_obs,
            "not_done": 0.0 if terminated else 1.0,
        }
        for k, v in row.items():
            self.data[k][self.ptr] = torch.as_tensor(v, dtype=torch.float32)
        self.ptr = (self.ptr + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        n_recent = self.recent_count(batch_size)
        g, dev = self.generator, self.device
        idx = torch.randint(0, self.size, (batch_size - n_recent,), generator=g, device=dev)
        if n_recent:
            window = min(self.recent_window, self.size)
            back = torch.randint(1, window + 1, (n_recent,), generator=g, device=dev)
            idx = torch.cat([idx, (self.ptr - back) % self.capacity])
        return Batch(*(self.data[k][idx] for k in FIELDS))

    def recent_count(self, batch_size: int) -> int:
        """How many of a batch's indices come from the recent window (see `split`)."""
        if self.split == "official":
            return batch_size - int(batch_size * (1.0 - self.recent_fraction))
        return int(round(batch_size * self.recent_fraction))

    # Checkpointing: only the filled rows travel, on the CPU.
    def state_dict(self) -> dict:
        rows = self.size
        return {
            "data": {k: v[:rows].cpu() if rows < self.capacity else v.cpu() for k, v in self.data.items()},
            "ptr": self.ptr,
            "size": self.size,
            "capacity": self.capacity,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state["capacity"] != self.capacity:
            raise ValueError(f"checkpoint replay capacity {state['capacity']} != configured {self.capacity}")
        for k, v in state["data"].items():
            self.data[k][: v.shape[0]] = v.to(self.device)
        self.ptr, self.size = state["ptr"], state["size"]
        self.generator.set_state(state["generator"])
