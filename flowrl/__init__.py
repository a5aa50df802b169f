"""flowrl: FlowRL (flow-based policies for online RL), shared RL parts and the benchmark pipeline."""

__version__ = "0.1.0"
