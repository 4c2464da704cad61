"""Concept-dependent face geometry for the synthetic renderer, in face units.

Each function answers "where is this feature, given the concepts present", e.g. the lips' outline
for a smiling, stretched or open mouth, or a brow's centre line when AU_1 raises its inner half.
The renderer (:mod:`hnd_jax.dictionary.synthetic.face`) paints these shapes and marks masks with them; keeping the
geometry separate lets a mask take the union of a feature drawn with and without a cue (so a shape
cue's mask covers every pixel the cue changes).

Face units: ``u`` -1..1 across the face oval (image left to right), ``v`` -1..1 from the top of the
oval to the chin; ``side`` is +1 for the image right (the subject's left) and -1 for the image left.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hnd_jax.dictionary.synthetic.draw import band_polygon, ellipse_pts

@dataclass(frozen=True)
class MouthShape:
    """The mouth's parameters: lip thicknesses, the gap between the lips, and the corners' lift."""

    y: float = 0.53  # midline at the centre
    w: float = 0.27  # half-width
    t_up: float = 0.05
    t_low: float = 0.065
    gap: float = 0.0
    corner: float = 0.0  # corner height offset (negative = up)


def mouth_shape(concepts: frozenset[str]) -> MouthShape:
    """How the mouth cues combine: corner pulls add up, openings add up, widths multiply."""
    m = MouthShape()
    w, t_up, t_low, gap, corner = m.w, m.t_up, m.t_low, m.gap, m.corner
    if "Smiling" in concepts:
        corner -= 0.09
        w *= 1.12
    if "AU_12" in concepts:
        corner -= 0.07
        w *= 1.08
    if "AU_15" in concepts:
        corner += 0.08
    if "AU_20" in concepts:
        w *= 1.28
        t_up *= 0.65
        t_low *= 0.65
    if "Big_Lips" in concepts:
        t_up *= 1.75
        t_low *= 1.7
    if "Mouth_Slightly_Open" in concepts:
        gap += 0.035
    if "AU_25" in concepts:
        gap += 0.045
    if "AU_26" in concepts:
        gap += 0.14
    return MouthShape(y=m.y, w=w, t_up=t_up, t_low=t_low, gap=gap, corner=corner)


def mouth_edges(m: MouthShape, n: int = 17):
    """(u, top of upper lip, bottom of upper lip, top of lower lip, bottom of lower lip) along u."""
    s = np.linspace(-1.0, 1.0, n)
    bulge = np.sqrt(np.clip(1 - s**2, 0, 1))
    mid = m.y + m.corner * s**2
    upper_top = mid - m.gap / 2 * bulge - m.t_up * bulge * (1 - 0.25 * np.exp(-(s / 0.18) ** 2))  # cupid's bow dip
    upper_bot = mid - m.gap / 2 * bulge
    lower_top = mid + m.gap / 2 * bulge
    lower_bot = mid + m.gap / 2 * bulge + m.t_low * bulge
    return s * m.w, upper_top, upper_bot, lower_top, lower_bot


def band_between(u: np.ndarray, top: np.ndarray, bottom: np.ndarray) -> list[tuple[float, float]]:
    """The polygon between two curves sampled at the same ``u``."""
    return list(zip(u.tolist(), top.tolist())) + list(zip(u[::-1].tolist(), bottom[::-1].tolist()))


def mouth_outer(m: MouthShape) -> list[tuple[float, float]]:
    """The outline of both lips (and the gap between them)."""
    u, ut, _, _, lb = mouth_edges(m)
    return band_between(u, ut, lb)


def mouth_corner_zone(m: MouthShape, side: int) -> list[tuple[float, float]]:
    """The area around one mouth corner (where corner pulls and their creases are drawn)."""
    cu, cv = side * m.w, m.y + m.corner
    return ellipse_pts((cu, cv), 0.13, 0.11, n=20)


#: Cues that change the mouth's outline (their masks cover the mouth drawn with and without them).
MOUTH_SHAPERS = ("Smiling", "AU_12", "AU_15", "AU_20", "Big_Lips", "Mouth_Slightly_Open", "AU_25", "AU_26")


def brow_line(concepts: frozenset[str], side: int, tilt: float) -> np.ndarray:
    """[9, 2] centre line of one brow from inner to outer end; ``side`` +1 image right, -1 left.

    ``AU_1`` only moves the inner half and ``AU_2`` only the outer half, so their masks can be the
    half of the brow they move.
    """
    s = np.linspace(0.0, 1.0, 9)
    u = side * (0.13 + 0.51 * s)
    v = -0.355 + tilt - (0.03 + 2 * tilt) * s - 0.03 * np.sin(np.pi * s)
    inner = np.clip(1.0 - s / 0.5, 0.0, 1.0) ** 1.5
    outer = np.clip((s - 0.5) / 0.5, 0.0, 1.0) ** 1.5
    if "Arched_Eyebrows" in concepts:
        v = v - 0.075 * np.sin(np.pi * s) ** 2 + 0.03 * outer
    if "AU_1" in concepts:
        v = v - 0.1 * inner
    if "AU_2" in concepts:
        v = v - 0.1 * outer
    if "AU_4" in concepts:
        v = v + 0.04 + 0.06 * inner
    return np.stack([u, v], axis=1)


def brow_half_thickness(concepts: frozenset[str]) -> np.ndarray:
    """[9] half-thickness along the brow (tapering outwards; doubled for bushy brows)."""
    th = 0.062 if "Bushy_Eyebrows" in concepts else 0.034
    return th * np.linspace(1.0, 0.6, 9)


def brow_polygon(concepts: frozenset[str], side: int, tilt: float, part: slice = slice(None)) -> list[tuple[float, float]]:
    """The outline of one brow, or of the samples ``part`` of it (e.g. the inner half)."""
    line = brow_line(concepts, side, tilt)
    return band_polygon(line[part], brow_half_thickness(concepts)[part])


def nose_base_tip(concepts: frozenset[str]) -> tuple[float, float]:
    """(half-width of the nose's base, v of its tip): bigger for Big_Nose, narrower when pointy."""
    base, tip = (0.2, 0.33) if "Big_Nose" in concepts else (0.13, 0.27)
    return (base * 0.8 if "Pointy_Nose" in concepts else base), tip


def nose_polygon(concepts: frozenset[str]) -> list[tuple[float, float]]:
    """The shaded wedge of the nose, from the bridge to the nostrils (a point for Pointy_Nose)."""
    base, tip = nose_base_tip(concepts)
    if "Pointy_Nose" in concepts:
        return [(-0.045, -0.12), (0.045, -0.12), (base, tip - 0.05), (0.0, tip + 0.08), (-base, tip - 0.05)]
    return [(-0.045, -0.12), (0.045, -0.12), (base, tip - 0.06), (base * 0.75, tip), (-base * 0.75, tip), (-base, tip - 0.06)]


def eye_radii(concepts: frozenset[str]) -> tuple[float, float]:
    """(rx, ry) of the eye opening: wide open for AU_5 (Narrow_Eyes is drawn with lids instead)."""
    return (0.17, 0.12) if "AU_5" in concepts else (0.165, 0.078)


#: Eye and cheek centres (``side * U``, ``V``).
EYE_U, EYE_V = 0.4, -0.15
CHEEK_U, CHEEK_V = 0.55, 0.2


def beard_area(
    concepts: frozenset[str], outline: list[tuple[float, float]]
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """The beard area: the face below the nose, minus the mouth (polygon, hole)."""
    lower = [(u, v) for u, v in outline if v >= 0.3]
    lower.sort(key=lambda p: np.arctan2(p[1], p[0]))  # from right to left along the jaw
    area = [(lower[0][0], 0.3)] + lower + [(lower[-1][0], 0.3)]
    return area, mouth_outer(mouth_shape(concepts))
