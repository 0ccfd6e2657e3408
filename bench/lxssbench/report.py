"""Writes the results: latest.md (tables) and latest.png (one panel per figure)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from .harness import Figure, Row, fmt, fmt_range, fmt_ratio
from .lab import PeerStatus
from .published import PUBLISHED

NA = "not available: "


def _cell(text: str) -> str:
    """Table-safe text: one line, no column breaks."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(text: str) -> str:
    # GitHub tables need \| even inside a code span (it renders as |).
    return f"`{_cell(text)}`" if text and "`" not in text else _cell(text)


def value(row: Row, unit: str) -> str:
    if row.unavailable:
        return _cell(NA + row.unavailable)
    if not row.samples:
        return _cell(NA + "no samples")
    return fmt(row.median, unit)


def _summary(figures: list[Figure]) -> list[str]:
    out = ["| id | figure | lxss (median) | comparisons: median (lxss ÷ it) |", "|---|---|---|---|"]
    for fig in figures:
        comps = []
        for row in fig.rows:
            if row.subject:
                continue
            shown = value(row, fig.unit) if not row.unavailable else "not available"
            comps.append(f"{_cell(row.label)}: {shown} ({fmt_ratio(fig.ratio(row))})")
        out.append(
            f"| `{fig.id}` | {_cell(fig.title)} | {value(fig.subject, fig.unit)} | "
            f"{'<br>'.join(comps)} |"
        )
    return out


def _figure_section(fig: Figure) -> list[str]:
    better = "lower is better" if fig.better == "lower" else "higher is better"
    out = [f"### `{fig.id}` — {fig.title} ({fig.unit}, {better})", "", fig.what, ""]
    howmany = f"{fig.runs} interleaved rounds after {fig.warmup} warm-up round(s)"
    notes = "".join(f" {_cell(n)}" + ("" if n.endswith(".") else ".") for n in fig.notes)
    out += [f"{howmany}; took {fig.seconds:.0f} s.{notes}", ""]
    out += ["| row | command | median | min–max | n | lxss ÷ row |", "|---|---|---|---|---|---|"]
    for row in fig.rows:
        label = f"**{_cell(row.label)}**" if row.subject else _cell(row.label)
        if row.unavailable or not row.samples:
            out.append(f"| {label} | {_code(row.command)} | {value(row, fig.unit)} | | | |")
            continue
        out.append(
            f"| {label} | {_code(row.command)} | {fmt(row.median, fig.unit)} | "
            f"{fmt_range(row.low, row.high, fig.unit)} | {row.n} | "
            f"{fmt_ratio(fig.ratio(row))} |"
        )
    published = PUBLISHED.get(fig.id, [])
    if published:
        out += [
            "",
            "Published elsewhere — other machines, other methods; not measured here "
            "and not comparable run to run:",
            "",
            "| what | figure | source | kind |",
            "|---|---|---|---|",
        ]
        out += [
            f"| {_cell(p.what)} | {_cell(p.value)} | {_cell(p.source)} | {p.kind} |"
            for p in published
        ]
    return [*out, ""]


def markdown(
    figures: list[Figure],
    *,
    mode: str,
    command: str,
    started: dt.datetime,
    seconds: float,
    machine: dict[str, str],
    peers: list[PeerStatus],
    partial: bool,
) -> str:
    when = started.strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# lxss benchmarks",
        "",
        f"Mode **{mode}**, `{command}`, started {when}, took {seconds / 60:.1f} min."
        + (" Only some figures were run (`--only`)." if partial else ""),
        "",
        "Every figure measures lxss (the **bold** row) and its comparisons in the same "
        "run, interleaved round by round (A B C A B C …), warm-ups discarded. Each cell "
        "is the median; the ratio is lxss's median ÷ that row's, in the figure's unit, "
        "so for times below 1 is faster than the row and for rates (MB/s, cmd/s) above "
        "1 is faster. An lxss row that cannot run says why, with the error lxss "
        "printed. See bench/README.md for what each figure means.",
        "",
        "## Summary",
        "",
        *_summary(figures),
        "",
        "## Figures",
        "",
    ]
    for fig in figures:
        lines += _figure_section(fig)
    lines += ["## Peers on this machine", "", "| peer | status | notes |", "|---|---|---|"]
    for p in peers:
        lines.append(f"| {_cell(p.label)} | {_cell(p.status)} | {_cell('; '.join(p.notes))} |")
    lines += ["", "## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {_cell(k)} | {_cell(v)} |" for k, v in machine.items()]
    return "\n".join(lines) + "\n"


def plot(figures: list[Figure], path: Path, *, title: str) -> None:
    """One horizontal bar panel per figure: medians with min–max whiskers."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    ncols = min(3, max(1, len(figures)))
    nrows = max(1, -(-len(figures) // ncols))
    fig_, axes = plt.subplots(nrows, ncols, figsize=(6.2 * ncols, 3.0 * nrows), squeeze=False)
    for ax, fig in zip(axes.flat, figures, strict=False):
        labels, medians, lows, highs, colours = [], [], [], [], []
        for row in fig.rows:
            label = row.label if len(row.label) <= 42 else row.label[:41] + "…"
            labels.append(label)
            if row.unavailable or not row.samples:
                medians.append(0.0)
                lows.append(0.0)
                highs.append(0.0)
            else:
                medians.append(row.median)
                lows.append(row.median - row.low)
                highs.append(row.high - row.median)
            colours.append("tab:red" if row.subject else "tab:blue")
        ys = list(range(len(labels)))
        ax.barh(ys, medians, xerr=[lows, highs], color=colours, capsize=3)
        ax.set_yticks(ys, labels, fontsize=7)
        ax.invert_yaxis()
        positive = [m for m in medians if m > 0]
        if positive and max(positive) / min(positive) > 50:
            ax.set_xscale("log")
        for y, row in zip(ys, fig.rows, strict=True):
            if row.unavailable or not row.samples:
                ax.text(
                    0.01,
                    y,
                    "not available",
                    transform=ax.get_yaxis_transform(),
                    va="center",
                    fontsize=7,
                    color="grey",
                )
        better = "lower" if fig.better == "lower" else "higher"
        ax.set_title(f"{fig.id}: {fig.title}\n({fig.unit}, {better} is better)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(figures) :]:
        ax.axis("off")
    fig_.suptitle(title, fontsize=10)
    fig_.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (3.0 * nrows)))  # room for the suptitle
    fig_.savefig(path, dpi=100)
    plt.close(fig_)
