"""Figures: median/min/max over runs, ratios to the ceilings, targets; a table and a JSON file."""

from __future__ import annotations

import math
import statistics
from typing import Any

import msgspec


class Row(msgspec.Struct, kw_only=True):
    scenario: str
    metric: str
    unit: str
    median: float | None
    min: float | None
    max: float | None
    ceiling: float | None = None  # the reference's median, same metric
    ceiling_name: str | None = None
    ratio: float | None = None  # median / ceiling
    target: str | None = None
    met: bool | None = None
    rss_mib: float | None = None  # server RSS (whole process tree) after the scenario
    note: str | None = None


def spread(values: list[float]) -> tuple[float | None, float | None, float | None]:
    clean = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not clean:
        return None, None, None
    return round(statistics.median(clean), 2), round(min(clean), 2), round(max(clean), 2)


def row(
    scenario: str,
    metric: str,
    unit: str,
    runs: list[dict[str, Any]],
    *,
    ceiling_runs: list[dict[str, Any]] | None = None,
    ceiling_name: str | None = None,
    ceiling_metric: str | None = None,
    target: str | None = None,
    check: Any = None,
    note: str | None = None,
    paired: bool = False,
) -> Row:
    """`paired`: run i of `runs` was taken right after run i of `ceiling_runs`, and the ratio is
    the median of the runs' own ratios (a drift of the machine between pairs cancels out)."""
    med, lo, hi = spread([r.get(metric) for r in runs])
    r = Row(scenario=scenario, metric=metric, unit=unit, median=med, min=lo, max=hi, target=target, note=note)
    if errors := sum(x.get("errors", 0) + x.get("send_errors", 0) for x in runs):
        r.note = f"{errors} failed requests (not counted)"
    rss = [x["rss_total_mib"] for x in runs if "rss_total_mib" in x]
    r.rss_mib = rss[-1] if rss else None
    if ceiling_runs:
        r.ceiling = spread([c.get(ceiling_metric or metric) for c in ceiling_runs])[0]
        r.ceiling_name = ceiling_name
        of = ceiling_metric or metric
        pairs = [(x.get(metric), c.get(of)) for x, c in zip(runs, ceiling_runs, strict=False)]
        ratios = [a / b for a, b in pairs if a is not None and b]
        if paired and len(ratios) == len(runs) == len(ceiling_runs):
            r.ratio = round(statistics.median(ratios), 3)
        elif r.ceiling and med is not None:
            r.ratio = round(med / r.ceiling, 3)
    if check is not None and med is not None:
        r.met = bool(check(r))
    return r


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}" if abs(v) < 1 else f"{v:.1f}"


def table(rows: list[Row]) -> str:
    head = [
        "scenario",
        "metric",
        "median",
        "min",
        "max",
        "ceiling",
        "ratio",
        "target",
        "met",
        "RSS MiB",
        "note",
    ]
    lines = [
        [
            r.scenario,
            f"{r.metric} ({r.unit})",
            _fmt(r.median),
            _fmt(r.min),
            _fmt(r.max),
            f"{_fmt(r.ceiling)} {r.ceiling_name or ''}".strip(),
            "-" if r.ratio is None else f"{r.ratio:.3f}",
            r.target or "",
            {True: "yes", False: "NO", None: ""}[r.met],
            _fmt(r.rss_mib),
            r.note or "",
        ]
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *lines, strict=True)]
    out = [" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    out.append("-+-".join("-" * w for w in widths))
    out += [" | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def markdown(rows: list[Row]) -> str:
    head = (
        "| scenario | metric | median | min | max | ceiling (same run) | ratio | target | met | RSS MiB "
        "| note |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r.scenario} | {r.metric} ({r.unit}) | {_fmt(r.median)} | {_fmt(r.min)} | {_fmt(r.max)} | "
            f"{_fmt(r.ceiling)} {r.ceiling_name or ''} | {'-' if r.ratio is None else f'{r.ratio:.3f}'} | "
            f"{r.target or ''} | {({True: 'yes', False: 'NO', None: ''})[r.met]} | {_fmt(r.rss_mib)} | "
            f"{r.note or ''} |"
        )
    return "\n".join(lines)
