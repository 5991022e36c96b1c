"""Drawing a model: zones as boxes coloured by sensitivity, allowed flows as arrows.

Layout: columns by distance from the Internet along allowed flows (zones it cannot
reach come last), rows in name order, all on one grid. Arrows are routed through
the free space between the boxes only — the vertical channels between columns and
the horizontal gaps between rows, each arrow on a track of its own — so an arrow
never crosses a zone it does not connect, and each label sits on its arrow's own
track, where it touches neither a zone nor another label. With a blast-radius
start, the zones it reaches and the hops that reach them are highlighted.

``to_svg`` and ``to_html`` return text; ``to_png`` returns bytes (Pillow). All three
draw the same :class:`Layout`, with its title and legend.
"""

from __future__ import annotations

import html
import io
from collections import deque
from dataclasses import dataclass

from detector.model.compile import CompiledModel
from detector.model.reach import BlastRadius, Hop, edges
from detector.model.schema import INTERNET

__all__ = ["Box", "Layout", "Route", "layout", "to_html", "to_png", "to_svg"]

COLOURS = {
    "internet": "#d9d9d9",
    "low": "#c7e9c0",
    "medium": "#fdd49e",
    "high": "#fc8d59",
    "restricted": "#d7301f",
}
_BOX_W, _BOX_H, _MARGIN, _TITLE, _LEGEND = 170, 48, 30, 34, 36
_TRACK, _LANE, _PAD = 10, 16, 14  # px between tracks in a channel, lanes in a gap
_CHAR_W, _LABEL_H = 6.2, 13  # label size per character at 10 px, and its height
_HIGHLIGHT = "#1f4e9c"

Box = tuple[float, float, float, float]  # left, top, right, bottom


@dataclass(frozen=True)
class Route:
    """One arrow: its polyline (axis-parallel segments) and its label's place."""

    hop: Hop
    points: tuple[tuple[float, float], ...]
    label: str
    label_box: Box

    @property
    def label_at(self) -> tuple[float, float]:
        left, _, right, bottom = self.label_box
        return (left + right) / 2, bottom - 3


@dataclass(frozen=True)
class Layout:
    """Where each zone sits and how each arrow runs."""

    title: str
    boxes: dict[str, Box]
    fills: dict[str, str]
    routes: tuple[Route, ...]  # one per zone pair, services joined
    width: int
    height: int
    reached: frozenset[str]
    highlighted: frozenset[tuple[str, str]]

    @property
    def hops(self) -> tuple[Hop, ...]:
        return tuple(r.hop for r in self.routes)


def _short(service: str, limit: int = 28) -> str:
    return service if len(service) <= limit else service[: limit - 1] + "…"


def layout(model: CompiledModel, radius: BlastRadius | None = None) -> Layout:
    graph = edges(model)
    merged: dict[tuple[str, str], list[str]] = {}
    for out in graph.values():
        for hop in out:
            services = merged.setdefault((hop.source, hop.destination), [])
            if hop.service not in services:
                services.append(hop.service)
    hops = [Hop(s, d, "", " ".join(v)) for (s, d), v in sorted(merged.items())]
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
    cell = {name: (col, row) for col, (_, members) in enumerate(sorted(columns.items()))
            for row, name in enumerate(members)}  # fmt: skip
    n_cols = len(columns)
    n_rows = max(len(m) for m in columns.values())

    # each arrow: out of its source's side into a channel, along a gap, into a channel
    # by its destination, into the destination's side
    plans = []
    for hop in hops:
        (sc, sr), (dc, dr) = cell[hop.source], cell[hop.destination]
        out_side = "right" if dc >= sc else "left"
        in_side = "left" if dc > sc else "right"
        leave = sc + 1 if out_side == "right" else sc  # channel c: left of column c
        enter = dc if in_side == "left" else dc + 1
        gap = max(sr, dr) if sr != dr else sr  # gap g: above row g (n_rows: below the last)
        plans.append((hop, out_side, in_side, leave, enter, gap))
    tracks: dict[int, int] = {}
    lanes: dict[int, int] = {}
    ports: dict[tuple[str, str], int] = {}
    assigned = []
    for hop, out_side, in_side, leave, enter, gap in plans:
        ta = tracks[leave] = tracks.get(leave, 0) + 1
        tb = ta if enter == leave else tracks.setdefault(enter, 0) + 1
        tracks[enter] = max(tracks.get(enter, 0), tb)
        lane = lanes[gap] = lanes.get(gap, 0) + 1
        pa = ports[(hop.source, out_side)] = ports.get((hop.source, out_side), 0) + 1
        pb = ports[(hop.destination, in_side)] = ports.get((hop.destination, in_side), 0) + 1
        assigned.append((hop, out_side, in_side, leave, enter, gap, ta, tb, lane, pa, pb))
    channel_w = [max(2 * _PAD + tracks.get(c, 0) * _TRACK, 40) for c in range(n_cols + 1)]
    gap_h = [max(2 * _PAD + lanes.get(g, 0) * _LANE, 24) for g in range(n_rows + 1)]
    col_x = [_MARGIN + sum(channel_w[: c + 1]) + c * _BOX_W for c in range(n_cols)]
    row_y = [_TITLE + sum(gap_h[: r + 1]) + r * _BOX_H for r in range(n_rows)]
    chan_x = [(col_x[c] - channel_w[c]) if c < n_cols else col_x[-1] + _BOX_W
              for c in range(n_cols + 1)]  # left edge of each channel  # fmt: skip
    gap_y = [(row_y[g] - gap_h[g]) if g < n_rows else row_y[-1] + _BOX_H
             for g in range(n_rows + 1)]  # top edge of each gap  # fmt: skip
    boxes: dict[str, Box] = {
        name: (col_x[c], row_y[r], col_x[c] + _BOX_W, row_y[r] + _BOX_H)
        for name, (c, r) in cell.items()
    }
    routes = []
    for hop, out_side, in_side, leave, enter, gap, ta, tb, lane, pa, pb in assigned:
        src, dst = boxes[hop.source], boxes[hop.destination]
        sy = src[1] + _BOX_H * pa / (ports[(hop.source, out_side)] + 1)
        dy = dst[1] + _BOX_H * pb / (ports[(hop.destination, in_side)] + 1)
        sx = src[2] if out_side == "right" else src[0]
        dx = dst[0] if in_side == "left" else dst[2]
        ax = chan_x[leave] + _PAD + (ta - 0.5) * _TRACK
        bx = chan_x[enter] + _PAD + (tb - 0.5) * _TRACK
        ly = gap_y[gap] + _PAD + (lane - 0.5) * _LANE
        points = ((sx, sy), (ax, sy), (ax, ly), (bx, ly), (bx, dy), (dx, dy))
        text = _short(hop.service)
        width = len(text) * _CHAR_W + 6
        centre = (ax + bx) / 2
        box = (centre - width / 2, ly - _LABEL_H / 2, centre + width / 2, ly + _LABEL_H / 2)
        routes.append(Route(hop, points, text, box))
    width = int(max(chan_x[-1] + channel_w[-1], *(r.label_box[2] for r in routes)) + _MARGIN)
    height = int(gap_y[-1] + gap_h[-1] + _LEGEND + _MARGIN / 2)
    fills = {
        name: COLOURS["internet"] if name == INTERNET
        else COLOURS[model.zones[name].tags.sensitivity]
        for name in names
    }  # fmt: skip
    reached = frozenset(r.zone for r in radius.reached) if radius else frozenset()
    path_hops = (
        frozenset((h.source, h.destination) for r in radius.reached for h in r.hops)
        if radius
        else frozenset()
    )
    title = f"{model.model.name} (model {model.version})"
    return Layout(title, boxes, fills, tuple(routes), width, height, reached, path_hops)


def _legend(lay: Layout) -> list[tuple[float, float, str, str]]:
    """(x, y, label, colour) of each legend swatch."""
    y = lay.height - _LEGEND
    return [
        (_MARGIN + i * 110, y, name, colour) for i, (name, colour) in enumerate(COLOURS.items())
    ]


def to_svg(model: CompiledModel, radius: BlastRadius | None = None) -> str:
    """The model as a standalone SVG document."""
    lay = layout(model, radius)
    e = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width}" height="{lay.height}" '
        f'viewBox="0 0 {lay.width} {lay.height}" font-family="sans-serif" font-size="12">',
        f"<title>{e(lay.title)}</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#555"/></marker><marker id="hot" viewBox="0 0 10 10" refX="10" refY="5" '
        f'markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 '
        f'L 0 10 z" fill="{_HIGHLIGHT}"/></marker></defs>',
        f'<text x="{_MARGIN}" y="{_MARGIN - 6}" font-size="15" font-weight="bold">'
        f"{e(lay.title)}</text>",
    ]
    for route in lay.routes:
        hop = route.hop
        hot = (hop.source, hop.destination) in lay.highlighted
        colour, marker, width = (_HIGHLIGHT, "hot", 2.5) if hot else ("#555", "arrow", 1.2)
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in route.points)
        out.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="{width}" '
            f'marker-end="url(#{marker})"><title>{e(hop.source)} -&gt; {e(hop.destination)}: '
            f"{e(hop.service)}</title></polyline>"
        )
    for route in lay.routes:
        hot = (route.hop.source, route.hop.destination) in lay.highlighted
        left, top, right, bottom = route.label_box
        x, y = route.label_at
        out.append(
            f'<rect x="{left:.1f}" y="{top:.1f}" width="{right - left:.1f}" '
            f'height="{bottom - top:.1f}" fill="white" fill-opacity="0.85"/>'
            f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="middle" font-size="10" '
            f'fill="{_HIGHLIGHT if hot else "#333"}">{e(route.label)}</text>'
        )
    for name, (x, y, _, _) in lay.boxes.items():
        start = radius is not None and name == radius.start
        stroke = _HIGHLIGHT if name in lay.reached or start else "#333"
        width = 3 if name in lay.reached or start else 1
        out.append(
            f'<g><rect x="{x}" y="{y}" width="{_BOX_W}" height="{_BOX_H}" rx="8" '
            f'fill="{lay.fills[name]}" stroke="{stroke}" stroke-width="{width}"/>'
            f'<text x="{x + _BOX_W / 2:.0f}" y="{y + _BOX_H / 2 + 4:.0f}" text-anchor="middle">'
            f"{e(name)}</text></g>"
        )
    for x, y, label, colour in _legend(lay):
        out.append(
            f'<rect x="{x}" y="{y}" width="14" height="14" fill="{colour}" stroke="#333"/>'
            f'<text x="{x + 20}" y="{y + 12}">{label}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


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
    """The drawing as PNG: the same layout, routes, labels, title and legend."""
    from PIL import Image, ImageDraw, ImageFont

    lay = layout(model, radius)
    image = Image.new("RGB", (lay.width, lay.height), "white")
    draw = ImageDraw.Draw(image)
    small = ImageFont.load_default(size=10)
    normal = ImageFont.load_default(size=12)
    draw.text((_MARGIN, _MARGIN - 6), lay.title, fill="black", anchor="ls",
              font=ImageFont.load_default(size=15))  # fmt: skip
    for route in lay.routes:
        hot = (route.hop.source, route.hop.destination) in lay.highlighted
        colour = _HIGHLIGHT if hot else "#555555"
        draw.line(list(route.points), fill=colour, width=3 if hot else 1, joint="curve")
        x1, (x2, y2) = route.points[-2][0], route.points[-1]
        direction = 1 if x2 > x1 else -1
        draw.polygon([(x2, y2), (x2 - 8 * direction, y2 - 4), (x2 - 8 * direction, y2 + 4)],
                     fill=colour)  # fmt: skip
    for route in lay.routes:
        hot = (route.hop.source, route.hop.destination) in lay.highlighted
        draw.rectangle(route.label_box, fill="white")
        x, y = route.label_at
        draw.text((x, y), route.label, fill=_HIGHLIGHT if hot else "#333333", anchor="ms",
                  font=small)  # fmt: skip
    for name, box in lay.boxes.items():
        wide = name in lay.reached or (radius is not None and name == radius.start)
        outline = _HIGHLIGHT if wide else "#333333"
        draw.rounded_rectangle(box, radius=8, fill=lay.fills[name], outline=outline,
                               width=3 if wide else 1)  # fmt: skip
        draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), name, fill="black",
                  anchor="mm", font=normal)  # fmt: skip
    for x, y, label, colour in _legend(lay):
        draw.rectangle([x, y, x + 14, y + 14], fill=colour, outline="#333333")
        draw.text((x + 20, y + 12), label, fill="black", anchor="ls", font=normal)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
