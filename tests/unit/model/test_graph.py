"""The model drawing's geometry on every example model: arrows run only through the
space between zones, labels touch neither a zone nor each other, and the PNG carries
the title and legend the SVG has."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from detector.model.graph import Box, layout, to_png, to_svg

from .conftest import MODELS, example

NAMES = [p.name for p in sorted(MODELS.glob("*.yaml"))]


def _overlap(a: Box, b: Box) -> bool:
    """The interiors meet (touching edges do not)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _crosses(p: tuple[float, float], q: tuple[float, float], box: Box) -> bool:
    """An axis-parallel segment runs through the box's interior."""
    left, top, right, bottom = box
    if p[1] == q[1]:  # horizontal
        x0, x1 = sorted((p[0], q[0]))
        return top < p[1] < bottom and x0 < right and left < x1
    y0, y1 = sorted((p[1], q[1]))
    return left < p[0] < right and y0 < bottom and top < y1


@pytest.mark.parametrize("name", NAMES)
def test_arrows_never_run_through_a_zone(name: str) -> None:
    lay = layout(example(name))
    assert lay.routes, name
    for route in lay.routes:
        for p, q in zip(route.points, route.points[1:], strict=False):
            assert p[0] == q[0] or p[1] == q[1], "segments are axis-parallel"
            for zone, box in lay.boxes.items():
                assert not _crosses(p, q, box), (name, route.hop, zone)
        start, end = route.points[0], route.points[-1]
        src, dst = lay.boxes[route.hop.source], lay.boxes[route.hop.destination]
        assert start[0] in (src[0], src[2]) and src[1] < start[1] < src[3]
        assert end[0] in (dst[0], dst[2]) and dst[1] < end[1] < dst[3]


@pytest.mark.parametrize("name", NAMES)
def test_labels_touch_neither_a_zone_nor_each_other(name: str) -> None:
    lay = layout(example(name))
    labels = [r.label_box for r in lay.routes]
    for i, label in enumerate(labels):
        assert label[0] >= 0 and label[2] <= lay.width, (name, lay.routes[i].hop)
        for zone, box in lay.boxes.items():
            assert not _overlap(label, box), (name, lay.routes[i].hop, zone)
        for j in range(i):
            assert not _overlap(label, labels[j]), (name, lay.routes[i].hop, lay.routes[j].hop)


def test_a_crossing_check_that_can_fail() -> None:
    box = (10.0, 10.0, 50.0, 30.0)
    assert _crosses((0, 20), (60, 20), box) and _crosses((30, 0), (30, 40), box)
    assert not _crosses((0, 5), (60, 5), box) and not _crosses((50, 0), (50, 40), box)
    assert not _crosses((50, 20), (70, 20), box)  # leaves from its edge


def test_the_png_has_the_title_and_legend_the_svg_has() -> None:
    model = example("three_tier_vpc.yaml")
    lay = layout(model)
    svg = to_svg(model)
    assert lay.title in svg and svg.count('width="14" height="14"') == 5
    image = Image.open(io.BytesIO(to_png(model))).convert("RGB")
    assert image.size == (lay.width, lay.height)
    title_band = image.crop((0, 0, lay.width, 30))
    assert title_band.getextrema() != ((255, 255),) * 3  # something is written up there
    legend = image.crop((0, lay.height - 40, lay.width, lay.height))
    colours = {colour for _, colour in legend.getcolors(1 << 16) or []}
    assert (0xD7, 0x30, 0x1F) in colours and (0xC7, 0xE9, 0xC0) in colours  # the swatches
