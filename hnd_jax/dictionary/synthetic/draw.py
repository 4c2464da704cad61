"""Drawing primitives for the synthetic faces: face-unit geometry, shapes, and exact masks.

The synthetic renderer (:mod:`hnd_jax.dictionary.synthetic.face`) describes every cue in **face units**: ``u`` runs from
-1 (image left edge of the face oval) to +1 (right edge), ``v`` from -1 (top of the oval) to +1
(chin), so the same drawing code serves a 178x218 CelebA-like frame, a 190x224 action-unit frame
and a 128x128 training image. :class:`FaceFrame` maps face units to pixels.

:class:`FaceCanvas` draws shapes onto an RGB image with PIL (alpha blending on, so translucent
lenses and blush mix with the skin) and, for every shape that is a concept's cue, draws the very
same shape (same coordinates, same rasteriser) onto that concept's ``L`` mask. That is what makes
the masks exact: a mask pixel is on where the cue's shape was rasterised, no estimate involved.
Per-pixel work (stubble dots, colour blending inside a region) is done with NumPy on whole arrays.
"""

from __future__ import annotations

import colorsys
import functools
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

Point = tuple[float, float]
Colour = tuple[int, ...]


@dataclass(frozen=True)
class FaceFrame:
    """Where the face oval sits in the image: centre ``(cx, cy)`` and half-axes ``(fw, fh)`` in pixels."""

    cx: float
    cy: float
    fw: float
    fh: float

    def px(self, pts: Iterable[Point]) -> list[Point]:
        """Face units -> pixel coordinates (floats; PIL rounds them the same way for image and mask)."""
        return [(self.cx + u * self.fw, self.cy + v * self.fh) for u, v in pts]

    def width(self, w: float) -> int:
        """A stroke width given in face units (of ``fw``), at least one pixel."""
        return max(1, int(round(w * self.fw)))


# ----------------------------------------------------------------------------- shape helpers
@functools.lru_cache(maxsize=256)
def _unit_arc(n: int, start: float, stop: float) -> tuple[np.ndarray, np.ndarray]:
    t = np.deg2rad(np.linspace(start, stop, n, endpoint=(stop - start) < 360.0))
    return np.cos(t), np.sin(t)


def ellipse_pts(centre: Point, rx: float, ry: float, n: int = 28, start: float = 0.0, stop: float = 360.0) -> list[Point]:
    """Points on an ellipse (angles in degrees, 0 = +u, 90 = +v i.e. downwards), ``n`` of them."""
    cos, sin = _unit_arc(int(n), float(start), float(stop))
    return list(zip((centre[0] + rx * cos).tolist(), (centre[1] + ry * sin).tolist()))


def superellipse_pts(rx: float, ry: float, exponent: float, n: int = 64, centre: Point = (0.0, 0.0)) -> list[Point]:
    """A superellipse |u/rx|^e + |v/ry|^e = 1 (e=2 is an ellipse; larger e is squarer)."""
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    u = rx * np.sign(c) * np.abs(c) ** (2.0 / exponent)
    v = ry * np.sign(s) * np.abs(s) ** (2.0 / exponent)
    return list(zip((u + centre[0]).tolist(), (v + centre[1]).tolist()))


@functools.lru_cache(maxsize=32)
def _unit_steps(n: int) -> np.ndarray:
    return np.linspace(0.0, 1.0, n)[:, None]


def quad_curve(p0: Point, p1: Point, p2: Point, n: int = 9) -> np.ndarray:
    """[n, 2] points of the quadratic curve through ``p0``, ``p1`` (at t=0.5) and ``p2``."""
    t = _unit_steps(int(n))
    a, b, c = np.asarray(p0), np.asarray(p1), np.asarray(p2)
    ctrl = 2 * b - 0.5 * (a + c)  # control point that makes the curve pass through p1
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * ctrl + t**2 * c


def band_polygon(centre_line: np.ndarray, half_thickness: np.ndarray | float) -> list[Point]:
    """A closed polygon of vertical half-thickness around a polyline (rows of ``[u, v]``)."""
    th = np.broadcast_to(np.asarray(half_thickness, dtype=float), (len(centre_line),))
    top = np.stack([centre_line[:, 0], centre_line[:, 1] - th], axis=1)
    bottom = np.stack([centre_line[:, 0], centre_line[:, 1] + th], axis=1)[::-1]
    return [tuple(p) for p in np.concatenate([top, bottom]).tolist()]


# ----------------------------------------------------------------------------- colours
def clip_rgb(c: Iterable[float]) -> tuple[int, int, int]:
    r, g, b = (int(round(min(255.0, max(0.0, float(x))))) for x in c)
    return (r, g, b)


def shade(c: Sequence[int], factor: float) -> tuple[int, int, int]:
    """Darker (factor < 1) or lighter (factor > 1) version of a colour."""
    if factor <= 1.0:
        return clip_rgb(x * factor for x in c)
    return clip_rgb(x + (255 - x) * (factor - 1.0) for x in c)


def mix(a: Sequence[int], b: Sequence[int], t: float) -> tuple[int, int, int]:
    """``(1 - t) * a + t * b``."""
    return clip_rgb((1 - t) * x + t * y for x, y in zip(a, b))


def hsv(h_deg: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v)
    return clip_rgb((r * 255, g * 255, b * 255))


def rgba(c: Sequence[int], alpha: int) -> tuple[int, int, int, int]:
    return (int(c[0]), int(c[1]), int(c[2]), int(alpha))


# ----------------------------------------------------------------------------- canvas
class FaceCanvas:
    """An RGB image plus one ``L`` mask per concept, both drawn from the same face-unit shapes.

    Methods draw on the image and, when ``concepts`` names one or more concepts, the same shape
    on each of those masks (``mask_only=True`` marks a mask without painting, used for regions a
    human annotator would mark around a cue, such as a clean beard area).
    """

    def __init__(self, size: tuple[int, int], frame: FaceFrame, background: Colour):
        self.size = (int(size[0]), int(size[1]))
        self.frame = frame
        self.image = Image.new("RGB", self.size, tuple(background))
        self._draw = ImageDraw.Draw(self.image, "RGBA")
        self._masks: dict[str, Image.Image] = {}
        self._mask_draws: dict[str, ImageDraw.ImageDraw] = {}

    # -- masks
    def _mask_draw(self, concept: str) -> ImageDraw.ImageDraw:
        if concept not in self._mask_draws:
            m = Image.new("L", self.size, 0)
            self._masks[concept] = m
            self._mask_draws[concept] = ImageDraw.Draw(m)
        return self._mask_draws[concept]

    def masks(self) -> dict[str, np.ndarray]:
        """concept -> bool [H, W]."""
        return {c: np.asarray(m) > 0 for c, m in self._masks.items()}

    def mask_array(self, concept: str) -> np.ndarray:
        return np.asarray(self._masks[concept]) > 0

    # -- shapes (pts in face units)
    def polygon(
        self,
        pts: Sequence[Point],
        fill: Colour | None,
        concepts: Iterable[str] = (),
        *,
        outline: Colour | None = None,
        width: int = 1,
        mask_only: bool = False,
        erase: bool = False,
    ) -> None:
        xy = self.frame.px(pts)
        if not mask_only:
            if fill is not None:
                self._draw.polygon(xy, fill=fill)
            if outline is not None:
                self._draw.polygon(xy, outline=outline, width=width)
        value = 0 if erase else 255
        for c in concepts:
            d = self._mask_draw(c)
            d.polygon(xy, fill=value)
            if outline is not None:  # separate call: PIL skips an outline whose ink equals the fill
                d.polygon(xy, outline=value, width=width)

    def line(
        self,
        pts: Sequence[Point],
        fill: Colour,
        width: int,
        concepts: Iterable[str] = (),
        *,
        mask_only: bool = False,
    ) -> None:
        xy = self.frame.px(pts)
        if not mask_only:
            self._draw.line(xy, fill=fill, width=width, joint="curve" if width > 2 else None)
        for c in concepts:
            self._mask_draw(c).line(xy, fill=255, width=width, joint="curve" if width > 2 else None)

    # -- per-pixel work on whole arrays
    def region_mask(self, pts: Sequence[Point], holes: Sequence[Sequence[Point]] = ()) -> np.ndarray:
        """bool [H, W]: the polygon ``pts`` minus the ``holes`` polygons (not drawn anywhere)."""
        m = Image.new("L", self.size, 0)
        d = ImageDraw.Draw(m)
        d.polygon(self.frame.px(pts), fill=255, outline=255)
        for hole in holes:
            d.polygon(self.frame.px(hole), fill=0, outline=0)
        return np.asarray(m) > 0

    def speckle(self, region: np.ndarray, density: float, colour: Colour, alpha: float, rng: np.random.Generator) -> None:
        """Colour a random ``density`` share of the pixels of ``region`` (stubble, texture).

        The dots come from one random field over the whole image, so a dot's position does not
        depend on the region's shape: changing an unrelated cue that bends the region's border
        (a bigger mouth cut out of the beard area) changes only the pixels near that border.
        """
        dots = region & (rng.random(region.shape, dtype=np.float32) < density)
        if not dots.any():
            return
        arr = np.array(self.image, dtype=np.float32)
        arr[dots] = (1 - alpha) * arr[dots] + alpha * np.asarray(colour, dtype=np.float32)
        self._replace_pixels(arr)

    def _replace_pixels(self, arr: np.ndarray) -> None:
        self.image = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
        self._draw = ImageDraw.Draw(self.image, "RGBA")

    def array(self) -> np.ndarray:
        """The image as uint8 [H, W, 3]."""
        return np.asarray(self.image, dtype=np.uint8).copy()
