"""Baseline agents the FlowRL paper compares against, each one readable file on the shared agent contract:

- `baselines.sac.SAC`   Soft Actor-Critic with automatic entropy tuning (Haarnoja et al., 2018)
- `baselines.td3.TD3`   Twin Delayed DDPG (Fujimoto et al., 2018)
- `baselines.qvpo.QVPO` Q-weighted Variational Policy Optimization, a diffusion policy (Ding et al., 2024)

They are registered by name in `flowrl.agents.registry.BUILTIN_AGENTS` and imported lazily from there.
"""
