"""Results pipeline: run directories -> tidy table, rliable's statistics (stats.py), tables, figures, summary.

python -m flowrl.analysis --runs runs/ --out results/x        # everything (see docs/results.md)
from flowrl.analysis import analyse, gather                    # the same from Python / Snakemake
"""

from __future__ import annotations

__all__ = ["analyse", "gather", "run_analysis", "AnalysisConfig", "AnalysisError"]


def __getattr__(name):  # import the heavy modules (matplotlib, scipy) only when used
    if name in ("analyse", "gather", "run_analysis", "AnalysisConfig"):
        from flowrl.analysis import pipeline

        return getattr(pipeline, name)
    if name == "AnalysisError":
        from flowrl.analysis.runs import AnalysisError

        return AnalysisError
    raise AttributeError(name)
