"""One colour per algorithm, the same in every figure.

Known algorithms have fixed colours (FlowRL first). Other names get the unused colours of a fallback
list in sorted-name order, so a given set of algorithms always gets the same colours.
"""

from __future__ import annotations

ALGO_COLOURS: dict[str, str] = {
    "flowrl": "#d62728",  # red
    "sac": "#1f77b4",  # blue
    "td3": "#2ca02c",  # green
    "qvpo": "#9467bd",  # purple
    "tdmpc2": "#ff7f0e",  # orange
    "td_mpcv2": "#ff7f0e",
    "simba": "#8c564b",  # brown
    "sac_simba": "#8c564b",
    "bro": "#e377c2",  # pink
    "dreamerv3": "#7f7f7f",
    "tdmpc": "#bcbd22",
    "td7": "#17becf",
}
FALLBACK_COLOURS = (
    "#e6ab02",
    "#1b9e77",
    "#e7298a",
    "#66a61e",
    "#a6761d",
    "#393b79",
    "#7570b3",
    "#d95f02",
    "#843c39",
    "#6b6ecf",
    "#b5cf6b",
    "#ce6dbd",
    "#9ecae1",
    "#636363",
    "#fdae6b",
)


def build_palette(algos) -> dict[str, str]:
    palette = {a: ALGO_COLOURS[a] for a in algos if a in ALGO_COLOURS}
    free = [c for c in FALLBACK_COLOURS if c not in palette.values()]
    for i, algo in enumerate(sorted(a for a in set(algos) if a not in palette)):
        palette[algo] = free[i % len(free)]
    return palette


def algo_order(algos) -> list[str]:
    """Display order: flowrl first, then its variants, then the rest alphabetically."""
    algos = sorted(set(algos))
    return sorted(algos, key=lambda a: (a != "flowrl", not a.startswith("flowrl"), a))
