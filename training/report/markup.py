"""The report's HTML pieces: escaping, number formats, tables, cards and the inline CSS."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  margin: 0 auto; max-width: 1100px; padding: 1.5rem 2rem 3rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
h2 { border-bottom: 2px solid #1f5fa8; padding-bottom: 0.2rem; margin-top: 2.2rem; }
h3 { margin-bottom: 0.3rem; }
.sub { color: #666; margin-top: 0; }
nav a { margin-right: 1rem; color: #1f5fa8; text-decoration: none; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8rem; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6rem 0.9rem; min-width: 9.5rem;
  background: #fafbfc; }
.card .label { font-size: 0.8rem; color: #666; text-transform: uppercase; letter-spacing: 0.03em; }
.card .value { font-size: 1.35rem; font-weight: 600; }
.card .note { font-size: 0.8rem; color: #666; }
.good { color: #1a7f37; } .bad { color: #c62828; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.9rem; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 0.25rem 0.7rem; text-align: right; }
th { background: #f2f4f7; } td:first-child, th:first-child { text-align: left; }
tr.champion td { font-weight: 600; background: #eef4fb; }
tr.baseline td { color: #7a4a12; }
img { max-width: 100%; height: auto; display: block; margin: 0.4rem 0 0.8rem; }
.caption { color: #555; font-size: 0.9rem; }
.missing { color: #999; font-style: italic; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 0.15rem 1rem; }
dl.meta dt { color: #666; } dl.meta dd { margin: 0; }
footer { margin-top: 2.5rem; color: #888; font-size: 0.8rem; }
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def fmt(value: Any, kind: str = "num") -> str:
    """A metric as text: 'pct' for shares and ratios, 'num' for scores, 'int' for counts."""
    x = num(value)
    if x is None:
        return "-"
    if kind == "pct":
        return f"{x * 100:.1f}%"
    if kind == "signed_pct":
        return f"{x * 100:+.1f}%"
    if kind == "int":
        return f"{x:,.0f}"
    if kind == "sec":
        return f"{x:,.1f} s"
    return f"{x:.3f}" if abs(x) < 100 else f"{x:,.1f}"


def html_table(
    header: Sequence[str], rows: Iterable[Sequence[str]], classes: Sequence[str] = ()
) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = classes[i] if i < len(classes) and classes[i] else ""
        attr = f' class="{cls}"' if cls else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def missing(text: str) -> str:
    return f'<p class="missing">{esc(text)}</p>'


def card(label: str, value: str, note: str = "", tone: str = "") -> str:
    cls = f"value {tone}".strip()
    extra = f'<div class="note">{esc(note)}</div>' if note else ""
    return (
        f'<div class="card"><div class="label">{esc(label)}</div>'
        f'<div class="{cls}">{esc(value)}</div>{extra}</div>'
    )
