"""Result tables as CSV (numbers), Markdown and LaTeX (booktabs; formatted for reading)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from flowrl.analysis.stats import METRIC_LABELS, METRICS
from flowrl.analysis.tasks import GROUPS

_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    ax = abs(x)
    if ax >= 100:
        return f"{x:.1f}"
    if ax >= 10:
        return f"{x:.2f}"
    return f"{x:.{digits}f}"


def to_markdown(display: pd.DataFrame) -> str:
    cols = [str(c) for c in display.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in display.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


def to_latex(display: pd.DataFrame, caption: str, label: str, tex_cells: pd.DataFrame | None = None) -> str:
    """booktabs table; `tex_cells` (same shape) holds ready-made LaTeX for cells, else text is escaped."""
    cells = tex_cells if tex_cells is not None else display.map(tex_escape)
    spec = "l" * len(display.columns)
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{tex_escape(caption)}}}",
        rf"\label{{{label}}}",
        r"\resizebox{\linewidth}{!}{%",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(tex_escape(c) for c in display.columns) + r" \\",
        r"\midrule",
    ]
    for row in cells.itertuples(index=False):
        lines.append(" & ".join(str(v) for v in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(
    numbers: pd.DataFrame, display: pd.DataFrame, base: Path, caption: str, tex_cells: pd.DataFrame | None = None
) -> list[Path]:
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = [base.with_suffix(".csv"), base.with_suffix(".md"), base.with_suffix(".tex")]
    numbers.to_csv(paths[0], index=False)
    paths[1].write_text(f"**{caption}**\n\n" + to_markdown(display))
    paths[2].write_text(to_latex(display, caption, f"tab:{base.name}", tex_cells))
    return paths


# ------------------------------------------------------------------------------------- the tables
PER_TASK_CELL = "mean ± std over seeds [95% t-interval of the mean] (n runs)"


def per_task_table(final_stats: pd.DataFrame, algos: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows: tasks; columns: algorithms; cell: PER_TASK_CELL. Best mean in bold.

    The interval is the Student-t one (stats.t_interval): with the few seeds of a typical study the percentile
    bootstrap interval of a mean is about the range of the seeds (exactly so for n <= 3); it stays in the CSV."""
    display_rows, tex_rows = [], []
    for task, df in final_stats.groupby("task", sort=True):
        by_algo = {r.algo: r for r in df.itertuples()}
        best = df["return_mean"].max()
        row, tex = {"Task": task}, {"Task": tex_escape(task)}
        for algo in algos:
            r = by_algo.get(algo)
            if r is None or r.n_runs == 0:
                row[algo], tex[algo] = "–", "–"
                continue
            bold = r.return_mean == best and len(by_algo) > 1
            interval = f"[{fmt(r.return_t_low)}, {fmt(r.return_t_high)}] " if math.isfinite(r.return_t_low) else ""
            row[algo] = (
                f"{'**' if bold else ''}{fmt(r.return_mean)} ± {fmt(r.return_std)}{'**' if bold else ''}"
                f" {interval}(n={r.n_runs})"
            )
            core = rf"{fmt(r.return_mean)} \pm {fmt(r.return_std)}"
            tex[algo] = (
                rf"$\mathbf{{{core}}}$" if bold else rf"${core}$"
            ) + rf" {{\scriptsize {interval.strip()}{', ' if interval else ''}n={r.n_runs}}}"
        display_rows.append(row)
        tex_rows.append(tex)
    cols = ["Task"] + algos
    return pd.DataFrame(display_rows, columns=cols), pd.DataFrame(tex_rows, columns=cols)


def aggregate_table(agg: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows: score set x algorithm; columns: metrics with 95% CIs and the runs/tasks used."""
    order = {g: i for i, g in enumerate(("all tasks",) + GROUPS)}
    rows, tex_rows = [], []
    sets = sorted(agg["set"].unique(), key=lambda s: (order.get(s, len(order)), s))
    for name in sets:
        for algo, df in agg[agg["set"] == name].groupby("algo", sort=False):
            m = {r.metric: r for r in df.itertuples()}
            first = df.iloc[0]
            row = {"Tasks": name, "Algorithm": algo}
            tex = {"Tasks": tex_escape(name), "Algorithm": tex_escape(algo)}
            for metric in METRICS:
                r = m[metric]
                row[METRIC_LABELS[metric]] = f"{r.value:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]"
                tex[METRIC_LABELS[metric]] = rf"{r.value:.3f} {{\scriptsize [{r.ci_low:.3f}, {r.ci_high:.3f}]}}"
            used = f"{first.n_runs} ({first.runs_per_task} x {first.n_tasks} tasks)"
            row["Runs used"], tex["Runs used"] = used, tex_escape(used)
            rows.append(row)
            tex_rows.append(tex)
    return pd.DataFrame(rows), pd.DataFrame(tex_rows)


def poi_table(poi: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pairwise P(row > column) with 95% CIs."""
    algos = list(dict.fromkeys(list(poi["algo_x"]) + list(poi["algo_y"])))
    lookup = {(r.algo_x, r.algo_y): r for r in poi.itertuples()}
    rows, tex_rows = [], []
    for x in algos:
        row, tex = {"P(row > column)": x}, {"P(row > column)": tex_escape(x)}
        for y in algos:
            r = lookup.get((x, y))
            row[y] = "–" if r is None else f"{r.poi:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"
            tex[y] = "–" if r is None else rf"{r.poi:.2f} {{\scriptsize [{r.ci_low:.2f}, {r.ci_high:.2f}]}}"
        rows.append(row)
        tex_rows.append(tex)
    return pd.DataFrame(rows), pd.DataFrame(tex_rows)
