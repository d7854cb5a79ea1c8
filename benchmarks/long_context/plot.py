"""The probe's plot: a PNG written with zlib alone (no matplotlib), a 5x7 bitmap font for the labels."""

from __future__ import annotations

import itertools
import struct
import zlib
from pathlib import Path
from typing import Any

from .data import BUCKET_NAMES

_GLYPHS = {  # 5 columns x 7 rows, one string of 5 bits per row
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "%": "11001 11010 00010 00100 01000 01011 10011",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    ",": "00000 00000 00000 00000 01100 00100 01000",
    "/": "00001 00010 00010 00100 01000 01000 10000",
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "a": "00000 00000 01110 00001 01111 10001 01111",
    "c": "00000 00000 01110 10000 10000 10001 01110",
    "d": "00001 00001 01101 10011 10001 10001 01111",
    "e": "00000 00000 01110 10001 11111 10000 01110",
    "f": "00110 01001 01000 11100 01000 01000 01000",
    "h": "10000 10000 10110 11001 10001 10001 10001",
    "i": "00100 00000 01100 00100 00100 00100 01110",
    "k": "10000 10000 10010 10100 11000 10100 10010",
    "l": "01100 00100 00100 00100 00100 00100 01110",
    "n": "00000 00000 10110 11001 10001 10001 10001",
    "o": "00000 00000 01110 10001 10001 10001 01110",
    "p": "00000 00000 11110 10001 10001 11110 10000",
    "r": "00000 00000 10110 11001 10000 10000 10000",
    "s": "00000 00000 01110 10000 01110 00001 11110",
    "t": "01000 01000 11100 01000 01000 01001 00110",
    "u": "00000 00000 10001 10001 10001 10011 01101",
    "w": "00000 00000 10001 10001 10101 10101 01010",
    "x": "00000 00000 10001 01010 00100 01010 10001",
    "b": "10000 10000 10110 11001 10001 10001 11110",
    "g": "00000 01111 10001 10001 01111 00001 01110",
    "m": "00000 00000 11010 10101 10101 10001 10001",
    "v": "00000 00000 10001 10001 10001 01010 00100",
    "q": "00000 00000 01101 10011 01111 00001 00001",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "=": "00000 00000 11111 00000 11111 00000 00000",
    "y": "00000 00000 10001 10001 01111 00001 01110",
}


class Canvas:
    """An RGB raster with lines, boxes and text, saved as PNG."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(b"\xff" * (width * height * 3))

    def dot(self, x: int, y: int, color: tuple[int, int, int], size: int = 1) -> None:
        for dy in range(size):
            for dx in range(size):
                px, py = x + dx, y + dy
                if 0 <= px < self.width and 0 <= py < self.height:
                    i = (py * self.width + px) * 3
                    self.pixels[i : i + 3] = bytes(color)

    def line(self, x0: float, y0: float, x1: float, y1: float, color: tuple[int, int, int], size: int = 1) -> None:
        steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        for s in range(steps + 1):
            t = s / steps
            self.dot(round(x0 + (x1 - x0) * t), round(y0 + (y1 - y0) * t), color, size)

    def box(self, x: int, y: int, w: int, h: int, color: tuple[int, int, int]) -> None:
        for yy in range(y, y + h):
            self.line(x, yy, x + w - 1, yy, color)

    def text(self, x: int, y: int, text: str, color: tuple[int, int, int] = (0, 0, 0), scale: int = 2) -> int:
        """Draw `text` with its top-left corner at (x, y); returns the x after it."""
        for char in text:
            rows = _GLYPHS.get(char, _GLYPHS[" "]).split()
            for r, bits in enumerate(rows):
                for c, bit in enumerate(bits):
                    if bit == "1":
                        self.dot(x + c * scale, y + r * scale, color, scale)
            x += 6 * scale
        return x

    def save(self, path: Path) -> None:
        raw = b"".join(
            b"\x00" + bytes(self.pixels[y * self.width * 3 : (y + 1) * self.width * 3]) for y in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)  # 8-bit RGB
        path.write_bytes(
            b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
        )


COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (140, 86, 75))


def plot_recall(arms: dict[str, dict[str, Any]], path: Path, length: int) -> None:
    """Recall (%) per depth bucket of `length`-token inputs, one line per arm, bucket names on the x axis."""
    title = f"fact recall by depth, {length:,}-token inputs"
    # the legend: one row per arm below the axis labels
    width, left, right, top, bottom = 720, 80, 30, 50, 80 + 26 * len(arms)
    height = top + 300 + bottom
    canvas = Canvas(width, height)
    plot_w, plot_h = width - left - right, height - top - bottom
    canvas.text(left, 14, title, scale=2)
    for percent in range(0, 101, 20):
        y = top + plot_h - round(plot_h * percent / 100)
        canvas.line(left, y, left + plot_w, y, (225, 225, 225))
        canvas.text(left - 12 - 6 * 2 * len(f"{percent}%"), y - 7, f"{percent}%", scale=2)
    canvas.line(left, top, left, top + plot_h, (0, 0, 0))
    canvas.line(left, top + plot_h, left + plot_w, top + plot_h, (0, 0, 0))
    n = len(BUCKET_NAMES)
    xs = [left + round(plot_w * (i + 0.5) / n) for i in range(n)]
    for x, name in zip(xs, BUCKET_NAMES, strict=True):
        canvas.line(x, top + plot_h, x, top + plot_h + 5, (0, 0, 0))
        canvas.text(x - 6 * len(name), top + plot_h + 10, name, scale=2)
    canvas.text(left + plot_w // 2 - 6 * 2 * 7, top + plot_h + 36, "depth (tokens)", scale=2)
    legend_x, legend_y = left + 10, top + plot_h + 70
    for (name, result), color in zip(arms.items(), COLORS, strict=False):
        points = [(x, result["recall_by_bucket"][b]) for x, b in zip(xs, BUCKET_NAMES, strict=True)]
        ys = [None if r is None else top + plot_h - round(plot_h * r) for _, r in points]
        for ((x0, _), (x1, _)), (y0, y1) in zip(itertools.pairwise(points), itertools.pairwise(ys), strict=True):
            if y0 is not None and y1 is not None:
                canvas.line(x0, y0, x1, y1, color, size=3)
        for (x, _), y in zip(points, ys, strict=True):
            if y is not None:
                canvas.box(x - 4, y - 4, 9, 9, color)
        canvas.box(legend_x, legend_y + 4, 20, 6, color)
        canvas.text(legend_x + 26, legend_y, name, scale=2)
        legend_y += 26
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
