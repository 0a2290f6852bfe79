"""A small raster plotting kit on Pillow: a canvas, panels with data coordinates, ticks, legends.

It draws what the timeline needs and nothing more: filled and outlined rectangles, lines
(solid or dashed), hatching, an x marker, horizontal and vertical text. Everything is drawn
at ``SCALE`` times the final size and reduced on save, so edges, diagonals and text come out
anti-aliased. Coordinates are in final pixels, as floats; y grows downwards.

It exists for start-up time: importing matplotlib and drawing one chart with it cost about a
second of CPU per run, more than the rest of a small run together; Pillow's drawing imports in
about 30 ms. The font is Pillow's own (``ImageFont.load_default(size=...)``, scalable since
Pillow 10.1), so no system font is needed; a character it lacks draws as a box.

Example::

    canvas = Canvas(400, 200)
    panel = Panel(canvas, left=50, top=20, right=390, bottom=170, x=(0, 10), y=(0, 5))
    panel.grid(x=ticks(0, 10), y=ticks(0, 5))
    panel.bar(2, 4, 0, 3, fill="#0072B2")
    panel.frame(x=ticks(0, 10), y=ticks(0, 5))
    canvas.save("chart.png")
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["Canvas", "LegendEntry", "Panel", "format_tick", "ticks"]

#: drawn at this multiple of the final size, then reduced: anti-aliasing for every shape
SCALE = 2
TEXT = "#222222"
AXIS = "#333333"
GRID = "#e5e5e5"

#: a legend entry: its label, and how to draw its swatch in a box (x0, y0, x1, y1)
LegendEntry = tuple[str, Callable[[float, float, float, float], None]]


@lru_cache(maxsize=16)
def _font(pixels: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=pixels)


class Canvas:
    """A white image ``width`` x ``height`` pixels, drawn at ``SCALE`` times that size."""

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.image = Image.new("RGB", (width * SCALE, height * SCALE), "white")
        self.draw = ImageDraw.Draw(self.image)

    def font(self, size: float) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        return _font(max(1, round(size * SCALE)))

    def text_width(self, text: str, size: float) -> float:
        return self.font(size).getlength(text) / SCALE

    def text(
        self, x: float, y: float, text: str, *, size: float, fill: str = TEXT, anchor: str = "la"
    ) -> None:
        """One line of text; ``anchor`` as Pillow's (``"la"`` left and ascender at ``(x, y)``,
        ``"mm"`` centred, ``"rm"`` right and middle...)."""
        self.draw.text((x * SCALE, y * SCALE), text, font=self.font(size), fill=fill, anchor=anchor)

    def vtext(self, x: float, y: float, text: str, *, size: float, fill: str = TEXT) -> None:
        """One line of text turned a quarter left (read bottom to top), centred on ``(x, y)``."""
        font = self.font(size)
        left, top, right, bottom = font.getbbox(text)
        strip = Image.new("L", (int(right - left) + 2, int(bottom - top) + 2), 0)
        ImageDraw.Draw(strip).text((1 - left, 1 - top), text, font=font, fill=255)
        turned = strip.rotate(90, expand=True)
        at = (round(x * SCALE - turned.width / 2), round(y * SCALE - turned.height / 2))
        self.image.paste(Image.new("RGB", turned.size, fill), at, turned)

    def rect(
        self,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        *,
        fill: str | None = None,
        outline: str | None = None,
        width: float = 1.0,
    ) -> None:
        """A rectangle between two corners. Edges are rounded to the canvas's pixels, so
        rectangles side by side tile without gaps; any rectangle is at least a pixel wide."""
        left, right = sorted((round(x0 * SCALE), round(x1 * SCALE)))
        top, bottom = sorted((round(y0 * SCALE), round(y1 * SCALE)))
        box = (left, top, max(left, right - 1), max(top, bottom - 1))
        self.draw.rectangle(box, fill=fill, outline=outline, width=max(1, round(width * SCALE)))

    def line(
        self, points: Sequence[tuple[float, float]], *, fill: str, width: float = 1.0, dash: float = 0.0
    ) -> None:
        """A polyline; ``dash`` > 0 draws a straight line as dashes that long with gaps as long."""
        scaled = [(x * SCALE, y * SCALE) for x, y in points]
        thick = max(1, round(width * SCALE))
        if not dash:
            self.draw.line(scaled, fill=fill, width=thick)
            return
        (xa, ya), (xb, yb) = scaled[0], scaled[-1]
        length = math.hypot(xb - xa, yb - ya)
        step = dash * SCALE
        at = 0.0
        while at < length:
            end = min(at + step, length)
            self.draw.line(
                [
                    (xa + (xb - xa) * at / length, ya + (yb - ya) * at / length),
                    (xa + (xb - xa) * end / length, ya + (yb - ya) * end / length),
                ],
                fill=fill,
                width=thick,
            )
            at += 2 * step

    def hatch(self, x0: float, y0: float, x1: float, y1: float, *, fill: str, spacing: float = 4.0) -> None:
        """Rising diagonal lines (``////``) across a rectangle, clipped to it."""
        left, right = sorted((x0, x1))
        top, bottom = sorted((y0, y1))
        height = bottom - top
        c = left - height  # a line is x - (bottom - y) = c: it crosses the bottom edge at x = c
        while c < right:
            # clip the segment from (c, bottom) to (c + height, top) to left <= x <= right
            xa, xb = max(c, left), min(c + height, right)
            if xb > xa:
                self.line([(xa, bottom - (xa - c)), (xb, bottom - (xb - c))], fill=fill, width=0.6)
            c += spacing

    def cross(self, x: float, y: float, size: float, *, fill: str, width: float = 1.5) -> None:
        """An x marker ``size`` pixels across, centred on ``(x, y)``."""
        h = size / 2
        self.line([(x - h, y - h), (x + h, y + h)], fill=fill, width=width)
        self.line([(x - h, y + h), (x + h, y - h)], fill=fill, width=width)

    def legend(
        self, entries: Sequence[LegendEntry], *, x: float, y: float, size: float, max_width: float
    ) -> float:
        """Entries left to right from ``(x, y)``, wrapped at ``max_width``; the y below them."""
        row = size * 1.7
        swatch = size * 1.6
        at = x
        for label, draw in entries:
            need = swatch + 6 + self.text_width(label, size) + size * 1.6
            if at > x and at + need - size * 1.6 > x + max_width:
                at, y = x, y + row
            draw(at, y + row / 2 - size * 0.45, at + swatch, y + row / 2 + size * 0.45)
            self.text(at + swatch + 6, y + row / 2, label, size=size, anchor="lm")
            at += need
        return y + row

    def boxed_legend(
        self, entries: Sequence[LegendEntry], *, right: float, top: float, size: float, title: str = ""
    ) -> None:
        """Entries in a framed white box whose top right corner is ``(right, top)``, one line,
        under an optional title (right-aligned)."""
        pad, swatch, row = 5.0, size * 1.6, size * 1.6
        widths = [swatch + 5 + self.text_width(label, size) for label, _ in entries]
        width = sum(widths) + 12 * (len(widths) - 1) + 2 * pad
        width = max(width, self.text_width(title, size) + 2 * pad)
        height = row * (2 if title else 1) + 2 * pad
        left = right - width
        self.rect(left, top, right, top + height, fill="white", outline="#cccccc", width=0.8)
        y = top + pad
        if title:
            self.text(right - pad, y + row / 2, title, size=size, anchor="rm")
            y += row
        at = left + pad
        for (label, draw), w in zip(entries, widths, strict=True):
            draw(at, y + row / 2 - size * 0.4, at + swatch, y + row / 2 + size * 0.4)
            self.text(at + swatch + 5, y + row / 2, label, size=size, anchor="lm")
            at += w + 12

    def save(self, path: str | Path) -> None:
        # zlib's fastest level: 20 ms less a chart than the default (6) for files ~15-40% larger
        # (tens of KB), and every run writes one
        self.image.reduce(SCALE).save(path, format="PNG", compress_level=1)


def ticks(lo: float, hi: float, most: int = 8) -> list[float]:
    """Round values from ``lo`` to ``hi`` (inclusive), 1, 2 or 5 x 10^k apart, at most ``most``."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(most - 1, 1)
    exponent = math.floor(math.log10(raw))
    step = next(m * 10.0**exponent for m in (1, 2, 2.5, 5, 10) if m * 10.0**exponent >= raw * 0.999)
    first = math.ceil(lo / step - 1e-9)
    values = []
    n = first
    while n * step <= hi * (1 + 1e-9) + 1e-12:
        values.append(n * step)
        n += 1
    return values


def format_tick(value: float, values: Sequence[float]) -> str:
    """A tick's label with as many decimals as its axis's step needs, thousands separated."""
    step = values[1] - values[0] if len(values) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    if decimals and abs(step * 10**decimals - round(step * 10**decimals)) > 1e-6:
        decimals += 1  # a step of 2.5 x 10^k needs one more
    return f"{value:,.{decimals}f}"


@dataclass
class Panel:
    """A plotting area on a canvas: its pixel box and the data range each axis spans.

    ``y`` is (bottom value, top value): give ``(n, 0)`` for rows numbered downwards.
    """

    canvas: Canvas
    left: float
    top: float
    right: float
    bottom: float
    x: tuple[float, float]
    y: tuple[float, float]

    def px(self, value: float) -> float:
        lo, hi = self.x
        return self.left + (value - lo) / (hi - lo) * (self.right - self.left)

    def py(self, value: float) -> float:
        lo, hi = self.y
        return self.bottom - (value - lo) / (hi - lo) * (self.bottom - self.top)

    def bar(
        self,
        x0: float,
        x1: float,
        y0: float,
        y1: float,
        *,
        fill: str | None = None,
        outline: str | None = None,
        width: float = 1.0,
    ) -> None:
        """A rectangle in data coordinates, clipped to the panel."""
        a, b = sorted((self.px(x0), self.px(x1)))
        c, d = sorted((self.py(y0), self.py(y1)))
        a, b = max(a, self.left), min(max(b, a + 1.0), self.right)  # a sliver still shows
        c, d = max(c, self.top), min(d, self.bottom)
        if b > a and d > c:
            self.canvas.rect(a, c, b, d, fill=fill, outline=outline, width=width)

    def grid(self, *, x: Sequence[float] = (), y: Sequence[float] = ()) -> None:
        for value in x:
            at = self.px(value)
            self.canvas.line([(at, self.top), (at, self.bottom)], fill=GRID, width=0.8)
        for value in y:
            at = self.py(value)
            self.canvas.line([(self.left, at), (self.right, at)], fill=GRID, width=0.8)

    def frame(
        self,
        *,
        x: Sequence[float] = (),
        y: Sequence[float] = (),
        x_labels: bool = False,
        y_labels: Sequence[str] | None = None,
        size: float = 12.0,
    ) -> None:
        """The panel's border, its tick marks and (when asked) their labels."""
        canvas = self.canvas
        canvas.rect(self.left, self.top, self.right, self.bottom, outline=AXIS, width=1.0)
        for value in x:
            at = self.px(value)
            canvas.line([(at, self.bottom), (at, self.bottom + 4)], fill=AXIS, width=1.0)
            if x_labels:
                canvas.text(at, self.bottom + 7, format_tick(value, x), size=size, anchor="ma")
        labels = y_labels if y_labels is not None else [format_tick(v, y) for v in y]
        for value, label in zip(y, labels, strict=True):
            at = self.py(value)
            canvas.line([(self.left - 4, at), (self.left, at)], fill=AXIS, width=1.0)
            if label:
                canvas.text(self.left - 7, at, label, size=size, anchor="rm")
