from flowrl.agents.base import Agent, Batch, EnvSpec
from flowrl.agents.registry import available_agents, get_agent_class, register_agent

__all__ = ["Agent", "Batch", "EnvSpec", "available_agents", "get_agent_class", "register_agent"]
