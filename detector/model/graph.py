"""Drawing a model: zones as boxes coloured by sensitivity, allowed flows as arrows.

Layout: columns by distance from the Internet along allowed flows (zones it
cannot reach come last), rows in name order. With a blast-radius start, the
zones it reaches and the hops that reach them are highlighted.

``to_svg`` and ``to_html`` return text; ``to_png`` returns bytes (Pillow).
"""

from __future__ import annotations

import html
import io
from collections import deque
from dataclasses import dataclass

from detector.model.compile import CompiledModel
from detector.model.reach import BlastRadius, Hop, edges
from detector.model.schema import INTERNET

__all__ = ["Layout", "layout", "to_html", "to_png", "to_svg"]

COLOURS = {
    "internet": "#d9d9d9",
    "low": "#c7e9c0",
    "medium": "#fdd49e",
    "high": "#fc8d59",
    "restricted": "#d7301f",
}
_BOX_W, _BOX_H, _GAP_X, _GAP_Y, _MARGIN = 170, 48, 110, 36, 30
_HIGHLIGHT = "#1f4e9c"


@dataclass(frozen=True)
class Layout:
    """Where each zone sits and which arrows to draw."""

    boxes: dict[str, tuple[int, int]]  # zone -> top-left corner
    fills: dict[str, str]
    hops: tuple[Hop, ...]  # one per zone pair, services joined
    width: int
    height: int
    reached: frozenset[str]
    highlighted: frozenset[tuple[str, str]]


def layout(model: CompiledModel, radius: BlastRadius | None = None) -> Layout:
    graph = edges(model)
    merged: dict[tuple[str, str], list[str]] = {}
    for out in graph.values():
        for hop in out:
            services = merged.setdefault((hop.source, hop.destination), [])
            if hop.service not in services:
                services.append(hop.service)
    hops = tuple(Hop(s, d, "", " ".join(v)) for (s, d), v in sorted(merged.items()))
    names = [INTERNET, *sorted(model.zones)]
    depth = {INTERNET: 0}
    queue = deque([INTERNET])
    while queue:
        current = queue.popleft()
        for hop in graph.get(current, ()):
            if hop.destination not in depth:
                depth[hop.destination] = depth[current] + 1
                queue.append(hop.destination)
    last = max(depth.values()) + 1
    columns: dict[int, list[str]] = {}
    for name in names:
        columns.setdefault(depth.get(name, last), []).append(name)
    boxes = {}
    for col, (_, members) in enumerate(sorted(columns.items())):
        for row, name in enumerate(members):
            boxes[name] = (_MARGIN + col * (_BOX_W + _GAP_X), _MARGIN + row * (_BOX_H + _GAP_Y))
    width = max(x for x, _ in boxes.values()) + _BOX_W + _MARGIN
    height = max(y for _, y in boxes.values()) + _BOX_H + _MARGIN + 40
    fills = {
        name: COLOURS["internet"]
        if name == INTERNET
        else COLOURS[model.zones[name].tags.sensitivity]
        for name in names
    }
    reached = frozenset(r.zone for r in radius.reached) if radius else frozenset()
    path_hops = (
        frozenset((h.source, h.destination) for r in radius.reached for h in r.hops)
        if radius
        else frozenset()
    )
    return Layout(boxes, fills, hops, width, height, reached, path_hops)


def _anchor(box: tuple[int, int], other: tuple[int, int]) -> tuple[float, float]:
    x, y = box
    if other[0] > x:
        return x + _BOX_W, y + _BOX_H / 2
    if other[0] < x:
        return x, y + _BOX_H / 2
    return x + _BOX_W / 2, (y + _BOX_H) if other[1] > y else y


def to_svg(model: CompiledModel, radius: BlastRadius | None = None) -> str:
    """The model as a standalone SVG document."""
    lay = layout(model, radius)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width}" height="{lay.height}" '
        f'viewBox="0 0 {lay.width} {lay.height}" font-family="sans-serif" font-size="12">',
        f"<title>{html.escape(model.model.name)} {html.escape(model.version)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#555"/></marker><marker id="hot" viewBox="0 0 10 10" refX="10" refY="5" '
        f'markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 '
        f'L 0 10 z" fill="{_HIGHLIGHT}"/></marker></defs>',
    ]
    for hop in lay.hops:
        (x1, y1), (x2, y2) = (
            _anchor(lay.boxes[hop.source], lay.boxes[hop.destination]),
            _anchor(lay.boxes[hop.destination], lay.boxes[hop.source]),
        )
        hot = (hop.source, hop.destination) in lay.highlighted
        colour, marker, width = (_HIGHLIGHT, "hot", 2.5) if hot else ("#555", "arrow", 1.2)
        bend = 25 if lay.boxes[hop.source][0] == lay.boxes[hop.destination][0] else 0
        mx, my = (x1 + x2) / 2 + bend, (y1 + y2) / 2 - 6
        out.append(
            f'<path d="M {x1:.0f} {y1:.0f} Q {mx:.0f} {my:.0f} {x2:.0f} {y2:.0f}" fill="none" '
            f'stroke="{colour}" stroke-width="{width}" marker-end="url(#{marker})">'
            f"<title>{html.escape(hop.source)} -&gt; {html.escape(hop.destination)}: "
            f"{html.escape(hop.service)}</title></path>"
        )
        out.append(
            f'<text x="{mx:.0f}" y="{my:.0f}" text-anchor="middle" fill="{colour}" '
            f'font-size="10">{html.escape(_short(hop.service))}</text>'
        )
    for name, (x, y) in lay.boxes.items():
        start = radius is not None and name == radius.start
        stroke = _HIGHLIGHT if name in lay.reached or start else "#333"
        width = 3 if name in lay.reached or start else 1
        out.append(
            f'<g><rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="8" '
            f'fill="{lay.fills[name]}" stroke="{stroke}" stroke-width="{width}"/>'
            f'<text x="{x + _BOX_W / 2:.0f}" y="{y + _BOX_H / 2 + 4:.0f}" text-anchor="middle">'
            f"{html.escape(name)}</text></g>"
        )
    legend_y = lay.height - 22
    for i, (label, colour) in enumerate(COLOURS.items()):
        x = _MARGIN + i * 110
        out.append(
            f'<rect x="{x}" y="{legend_y}" width="14" height="14" fill="{colour}" stroke="#333"/>'
            f'<text x="{x + 20}" y="{legend_y + 12}">{label}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def _short(service: str, limit: int = 28) -> str:
    return service if len(service) <= limit else service[: limit - 1] + "…"


def to_html(model: CompiledModel, radius: BlastRadius | None = None) -> str:
    """A self-contained page: the drawing, and the flows as a table."""
    lay = layout(model, radius)
    rows = "".join(
        f"<tr><td>{html.escape(h.source)}</td><td>{html.escape(h.destination)}</td>"
        f"<td>{html.escape(h.service)}</td></tr>"
        for h in lay.hops
    )
    heading = html.escape(model.model.name)
    subtitle = (
        f"Blast radius from {html.escape(radius.start)}: {len(radius.reached)} zone(s) highlighted."
        if radius
        else "Zones coloured by sensitivity; arrows are allowed flows."
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{heading}: segmentation model</title><style>body{{font-family:sans-serif;"
        "margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        "</style></head><body>"
        f"<h1>{heading}</h1><p>Model version {html.escape(model.version)}. {subtitle}</p>"
        f"{to_svg(model, radius)}<h2>Allowed flows</h2><table><tr><th>from</th><th>to</th>"
        f"<th>services</th></tr>{rows}</table></body></html>\n"
    )


def to_png(model: CompiledModel, radius: BlastRadius | None = None) -> bytes:
    """The drawing as PNG (straight arrows, the same layout and colours)."""
    from PIL import Image, ImageDraw

    lay = layout(model, radius)
    image = Image.new("RGB", (lay.width, lay.height), "white")
    draw = ImageDraw.Draw(image)
    for hop in lay.hops:
        start = _anchor(lay.boxes[hop.source], lay.boxes[hop.destination])
        end = _anchor(lay.boxes[hop.destination], lay.boxes[hop.source])
        hot = (hop.source, hop.destination) in lay.highlighted
        colour = _HIGHLIGHT if hot else "#555555"
        draw.line([start, end], fill=colour, width=3 if hot else 1)
        draw.ellipse([end[0] - 4, end[1] - 4, end[0] + 4, end[1] + 4], fill=colour)
        mid = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 - 12)
        draw.text(mid, _short(hop.service), fill=colour, anchor="mm")
    for name, (x, y) in lay.boxes.items():
        wide = name in lay.reached or (radius is not None and name == radius.start)
        outline = _HIGHLIGHT if wide else "#333333"
        box = [x, y, x + _BOX_W, y + _BOX_H]
        draw.rounded_rectangle(box, radius=8, fill=lay.fills[name], outline=outline,
                               width=3 if wide else 1)  # fmt: skip
        draw.text((x + _BOX_W / 2, y + _BOX_H / 2), name, fill="black", anchor="mm")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
