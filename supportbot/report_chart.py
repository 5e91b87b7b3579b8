"""The daily report's chart: tickets opened and resolved per day, with the backlog, as a PNG.

Needs matplotlib, the `chart` extra (pip install 'supportbot[chart]'); supportbot.reporting imports
this module only when drawing, and sends the report without a chart when it is missing.
"""

from __future__ import annotations

import io

from matplotlib.figure import Figure  # the object API: no pyplot global state, safe off the loop
from matplotlib.ticker import MaxNLocator

from core.reports import TrendDay

# Shown 600 px wide in mail; drawn at twice that so it stays sharp on high-density screens.
WIDTH_INCHES, HEIGHT_INCHES, DPI = 6.0, 3.2, 200
OPENED, RESOLVED, BACKLOG = "#4c78a8", "#59a14f", "#e15759"


def trend_chart_png(trend: list[TrendDay], title: str = "Tickets per day, and open tickets at each day's end") -> bytes:
    """Bars for tickets opened and resolved each day, a line for the backlog at each day's end."""
    fig = Figure(figsize=(WIDTH_INCHES, HEIGHT_INCHES), dpi=DPI, layout="constrained")
    volume = fig.add_subplot()
    x = list(range(len(trend)))
    width = 0.4
    volume.bar([i - width / 2 for i in x], [t.counts.opened for t in trend], width, color=OPENED,
               label="Opened")
    volume.bar([i + width / 2 for i in x], [t.counts.resolved for t in trend], width, color=RESOLVED,
               label="Resolved")
    volume.set_ylabel("Tickets per day", fontsize=9)
    volume.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
    volume.set_ylim(bottom=0, top=max(1, *(max(t.counts.opened, t.counts.resolved) for t in trend)) * 1.3)

    backlog = volume.twinx()  # its own scale: a backlog of hundreds would flatten the daily bars
    backlog.plot(x, [t.backlog for t in trend], color=BACKLOG, marker="o", markersize=3, linewidth=1.6,
                 label="Open at end of day")
    backlog.set_ylabel("Open tickets", fontsize=9, color=BACKLOG)
    backlog.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=5))
    backlog.set_ylim(bottom=0, top=max(1, *(t.backlog for t in trend)) * 1.3)
    backlog.tick_params(axis="y", labelsize=8, colors=BACKLOG)

    volume.set_xticks(x, _day_labels(trend), fontsize=7.5)
    volume.tick_params(axis="y", labelsize=8)
    volume.set_xlim(-0.6, len(trend) - 0.4)
    volume.grid(axis="y", color="#e5e7eb", linewidth=0.6)
    volume.set_axisbelow(True)
    for axis in (volume, backlog):
        axis.spines["top"].set_visible(False)
    volume.set_title(title, fontsize=10, loc="left")
    handles = volume.get_legend_handles_labels()[0] + backlog.get_legend_handles_labels()[0]
    volume.legend(handles=handles, loc="upper left", fontsize=8, frameon=False, ncols=3)

    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()


def _day_labels(trend: list[TrendDay]) -> list[str]:
    """"Tue 17 Feb", then only the day number until the month changes: fits 14+ days at 600 px."""
    labels = []
    for i, t in enumerate(trend):
        month = f" {t.day:%b}" if i == 0 or t.day.day == 1 else ""
        labels.append(f"{t.day:%a}\n{t.day.day}{month}")
    return labels
