"""Procedural synthetic faces: one visible cue and one exact mask for each Face Dictionary concept.

:func:`render_face` draws a cartoon face from a :class:`FaceSpec` (which local concepts are present,
the global attributes, and random jitter) with PIL and NumPy, and returns the image together with
a boolean mask per concept marking **where that concept's cue was drawn** -- the region a human
annotator would outline (e.g. the lenses and frame for ``Eyeglasses``, the red lips for
``Wearing_Lipstick``, the clean beard area for ``No_Beard``), not the whole face. Rendering is a
pure function of the spec: same spec, same pixels.

Local cues (face units: ``u`` -1..1 left to right across the face oval, ``v`` -1..1 top to chin)

* parts, always drawn: eyes, brows, nose (shaded wedge + nostrils), mouth (lips), cheeks (shading);
  ``left_*`` is the subject's left, i.e. the image right, as in CelebAMask-HQ;
* eyes: ``Narrow_Eyes`` heavy lids leaving a slit, ``AU_5`` wide-open eyes showing white above the iris,
  ``Eyeglasses`` frame + tinted lenses + temples, ``Bags_Under_Eyes`` dark crescents;
* brows: ``Bushy_Eyebrows`` thick hairy brows, ``Arched_Eyebrows`` peaked brows, ``AU_1`` raised inner
  ends, ``AU_2`` raised outer ends, ``AU_4`` lowered brows with a vertical furrow between them;
* cheeks: ``Rosy_Cheeks`` pink blush, ``High_Cheekbones`` highlight over a cheekbone shadow,
  ``AU_6`` raised cheek bulge under the eye with crow's feet;
* nose: ``Big_Nose`` wide long nose, ``Pointy_Nose`` pointed tip, ``AU_9`` wrinkles across the bridge;
* mouth: ``Smiling`` upturned curve, ``Mouth_Slightly_Open`` small gap with teeth, ``Big_Lips``
  thick lips, ``Wearing_Lipstick`` red lips, ``AU_12`` corners pulled up with creases, ``AU_15``
  corners pulled down with creases, ``AU_20`` stretched thin mouth, ``AU_25`` lips parted;
* lower face: ``Mustache``, ``Goatee``, ``5_o_Clock_Shadow`` stubble dots over the beard area,
  ``No_Beard`` (a clean beard area; the mask is that area), ``Double_Chin`` a second chin under the
  jaw, ``AU_17`` raised, dimpled chin, ``AU_26`` dropped jaw (wide-open mouth down to the chin).

Global proxies

* ``skin_tone``: the skin colour, from bright (0) to dark (1); the ``bright`` group draws from
  [0, 0.4], ``dark`` from [0.6, 1].
* ``Age``: face size and roundness for ``zero_to_twenty``; grey hair and forehead lines for
  ``forty_to_sixty`` (some) and ``sixty_plus`` (many, white hair).
* ``Gender`` and ``Ethnicity`` are **abstract synthetic stand-ins, not claims about people**:
  ``Gender`` picks a drawing convention (``Male``: short hair cap and squarer jaw; ``Female``: long
  hair down to the shoulders and rounder jaw); ``Ethnicity`` picks the background hue band (``white``
  blue, ``black`` green, ``asian`` purple, ``indian`` orange) and nothing about the face. They exist
  so that the global-concept code has distinguishable groups to measure; they are independent of
  the skin-tone proxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

from hnd_jax.dictionary.synth_draw import (
    FaceCanvas,
    FaceFrame,
    band_polygon,
    clip_rgb,
    ellipse_pts,
    hsv,
    mix,
    quad_curve,
    rgba,
    shade,
    superellipse_pts,
)

PARTS: tuple[str, ...] = (
    "nose", "left_brow", "right_brow", "left_eye", "right_eye", "mouth", "left_cheek", "right_cheek"
)
ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Bushy_Eyebrows", "No_Beard", "Bags_Under_Eyes", "Big_Lips",
    "Big_Nose", "Double_Chin", "Eyeglasses", "Goatee", "High_Cheekbones", "Rosy_Cheeks",
    "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "Pointy_Nose", "Smiling", "Wearing_Lipstick",
)
ACTION_UNITS: tuple[str, ...] = (
    "AU_1", "AU_2", "AU_4", "AU_5", "AU_6", "AU_9", "AU_12", "AU_15", "AU_17", "AU_20", "AU_25", "AU_26"
)
#: Every local concept the renderer can draw (the 38 of the published Face Dictionary).
DRAWABLE_CONCEPTS: frozenset[str] = frozenset(PARTS + ATTRIBUTES + ACTION_UNITS)

#: Pairs that cannot be drawn on one face (the later cue would erase the earlier one's meaning).
CONFLICTS: tuple[frozenset[str], ...] = tuple(
    frozenset(p)
    for p in [
        ("No_Beard", "Goatee"),
        ("No_Beard", "Mustache"),
        ("No_Beard", "5_o_Clock_Shadow"),
        ("AU_12", "AU_15"),
        ("Smiling", "AU_15"),
        ("Narrow_Eyes", "AU_5"),
        ("AU_4", "AU_1"),
        ("AU_4", "AU_2"),
    ]
)

#: Global families the renderer has a visible proxy for, and their groups.
GLOBAL_GROUPS: dict[str, tuple[str, ...]] = {
    "Age": ("zero_to_twenty", "twenty_to_forty", "forty_to_sixty", "sixty_plus"),
    "Gender": ("Male", "Female"),
    "Ethnicity": ("white", "black", "asian", "indian"),
    "skin_tone": ("bright", "dark"),
}
SKIN_TONE_RANGES: dict[str, tuple[float, float]] = {"bright": (0.0, 0.4), "dark": (0.6, 1.0)}
_BACKGROUND_HUES: dict[str, float] = {"white": 210.0, "black": 120.0, "asian": 285.0, "indian": 30.0}
_HAIR_COLOURS: tuple[tuple[int, int, int], ...] = (
    (25, 20, 18), (55, 38, 28), (95, 62, 38), (140, 80, 40), (190, 150, 90), (70, 50, 45)
)
_FRAME_COLOURS: tuple[tuple[int, int, int], ...] = ((20, 20, 20), (70, 40, 20), (25, 35, 90), (110, 110, 115))


def conflicts_with(concept: str, present: frozenset[str] | set[str]) -> bool:
    """True when ``concept`` cannot be drawn together with one of ``present``."""
    return any(concept in pair and (pair - {concept}) & present for pair in CONFLICTS)


@dataclass(frozen=True)
class FaceJitter:
    """Per-face random variation that is not a concept: placement, proportions and colours.

    Drawn by :func:`sample_jitter`; kept in the spec so that toggling one concept re-renders the
    very same face with only that cue changed.
    """

    dx: float = 0.0  # face centre shift, in face half-widths
    dy: float = 0.0
    scale: float = 1.0
    aspect: float = 1.32  # oval height / width
    skin_shift: tuple[float, float, float] = (0.0, 0.0, 0.0)
    hair_colour: tuple[int, int, int] = (55, 38, 28)
    hue_offset: float = 0.0
    background_sv: tuple[float, float] = (0.3, 0.82)
    clothes_colour: tuple[int, int, int] = (60, 90, 140)
    frame_colour: tuple[int, int, int] = (20, 20, 20)
    lip_tint: float = 0.0
    brow_tilt: float = 0.0
    noise_seed: int = 0


@dataclass(frozen=True)
class FaceSpec:
    """What to draw: present local concepts, global attributes (group names) and jitter.

    ``skin_tone`` is continuous, 0 (brightest) .. 1 (darkest); see :func:`skin_tone_group`.
    ``beard`` draws an unannotated jaw beard (used where ``No_Beard`` is annotated but absent and no
    other facial-hair concept is present, so that "not No_Beard" is visible too).
    """

    concepts: frozenset[str] = frozenset()
    age: str = "twenty_to_forty"
    gender: str = "Male"
    ethnicity: str = "white"
    skin_tone: float = 0.3
    beard: bool = False
    jitter: FaceJitter = field(default_factory=FaceJitter)

    def with_concepts(self, concepts) -> "FaceSpec":
        return replace(self, concepts=frozenset(concepts))


def skin_tone_group(value: float) -> str | None:
    """'bright' / 'dark' for a skin-tone value, None in the gap between the two groups."""
    for group, (lo, hi) in SKIN_TONE_RANGES.items():
        if lo <= value <= hi:
            return group
    return None


def sample_jitter(rng: np.random.Generator) -> FaceJitter:
    """Random placement, proportions and colours for one face."""
    return FaceJitter(
        dx=float(rng.uniform(-0.08, 0.08)),
        dy=float(rng.uniform(-0.05, 0.05)),
        scale=float(rng.uniform(0.93, 1.05)),
        aspect=float(rng.uniform(1.26, 1.38)),
        skin_shift=tuple(float(x) for x in rng.uniform(-7, 7, size=3)),
        hair_colour=_HAIR_COLOURS[int(rng.integers(len(_HAIR_COLOURS)))],
        hue_offset=float(rng.uniform(-22, 22)),
        background_sv=(float(rng.uniform(0.22, 0.42)), float(rng.uniform(0.72, 0.9))),
        clothes_colour=hsv(float(rng.uniform(0, 360)), float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7))),
        frame_colour=_FRAME_COLOURS[int(rng.integers(len(_FRAME_COLOURS)))],
        lip_tint=float(rng.uniform(-0.1, 0.1)),
        brow_tilt=float(rng.uniform(-0.02, 0.02)),
        noise_seed=int(rng.integers(0, 2**31 - 1)),
    )


def sample_globals(rng: np.random.Generator, fixed: Mapping[str, str] | None = None) -> dict:
    """Random global attributes as FaceSpec keyword arguments; ``fixed`` maps family -> group."""
    fixed = dict(fixed or {})
    age = fixed.get("Age") or GLOBAL_GROUPS["Age"][int(rng.integers(4))]
    gender = fixed.get("Gender") or GLOBAL_GROUPS["Gender"][int(rng.integers(2))]
    ethnicity = fixed.get("Ethnicity") or GLOBAL_GROUPS["Ethnicity"][int(rng.integers(4))]
    tone_group = fixed.get("skin_tone")
    if tone_group is None:
        tone = float(rng.uniform(0.0, 1.0))
    else:
        lo, hi = SKIN_TONE_RANGES[tone_group]
        tone = float(rng.uniform(lo, hi))
    return {"age": age, "gender": gender, "ethnicity": ethnicity, "skin_tone": tone}


# ----------------------------------------------------------------------------- geometry
def _skin_colour(spec: FaceSpec) -> tuple[int, int, int]:
    bright, mid, dark = np.array([238, 204, 178]), np.array([186, 134, 98]), np.array([88, 58, 42])
    t = float(np.clip(spec.skin_tone, 0.0, 1.0))
    base = bright + (mid - bright) * (t / 0.5) if t < 0.5 else mid + (dark - mid) * ((t - 0.5) / 0.5)
    return clip_rgb(base + np.asarray(spec.jitter.skin_shift))


def _hair_colour(spec: FaceSpec) -> tuple[int, int, int]:
    grey = {"forty_to_sixty": 0.35, "sixty_plus": 0.8}.get(spec.age, 0.0)
    return mix(spec.jitter.hair_colour, (200, 200, 200), grey)


def _frame(spec: FaceSpec, size: tuple[int, int]) -> FaceFrame:
    w, h = size
    j = spec.jitter
    scale = j.scale * (0.9 if spec.age == "zero_to_twenty" else 1.0)
    aspect = j.aspect * (0.94 if spec.age == "zero_to_twenty" else 1.0)
    fw = min(0.31 * w, 0.355 * h / aspect) * scale
    fh = fw * aspect
    return FaceFrame(cx=w / 2 + j.dx * fw, cy=0.54 * h + j.dy * fh, fw=fw, fh=fh)


@dataclass(frozen=True)
class _MouthShape:
    y: float = 0.53  # midline at the centre
    w: float = 0.27  # half-width
    t_up: float = 0.05
    t_low: float = 0.065
    gap: float = 0.0
    corner: float = 0.0  # corner height offset (negative = up)


def _mouth_shape(concepts: frozenset[str]) -> _MouthShape:
    m = _MouthShape()
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
    return _MouthShape(y=m.y, w=w, t_up=t_up, t_low=t_low, gap=gap, corner=corner)


def _mouth_edges(m: _MouthShape, u_from: float = -1.0, u_to: float = 1.0, n: int = 17):
    """(u, top of upper lip, bottom of upper lip, top of lower lip, bottom of lower lip) along u.

    ``u_from``/``u_to`` select a part of the mouth, as fractions of the half-width.
    """
    s = np.linspace(u_from, u_to, n)
    bulge = np.sqrt(np.clip(1 - s**2, 0, 1))
    mid = m.y + m.corner * s**2
    upper_top = mid - m.gap / 2 * bulge - m.t_up * bulge * (1 - 0.25 * np.exp(-(s / 0.18) ** 2))  # cupid's bow dip
    upper_bot = mid - m.gap / 2 * bulge
    lower_top = mid + m.gap / 2 * bulge
    lower_bot = mid + m.gap / 2 * bulge + m.t_low * bulge
    return s * m.w, upper_top, upper_bot, lower_top, lower_bot


def _poly(u, top, bottom) -> list[tuple[float, float]]:
    return list(zip(u.tolist(), top.tolist())) + list(zip(u[::-1].tolist(), bottom[::-1].tolist()))


def _mouth_outer(m: _MouthShape, u_from: float = -1.0, u_to: float = 1.0):
    u, ut, _, _, lb = _mouth_edges(m, u_from, u_to)
    return _poly(u, ut, lb)


def _mouth_corner_zone(m: _MouthShape, side: int) -> list[tuple[float, float]]:
    """The area around one mouth corner (where corner pulls and their creases are drawn)."""
    cu, cv = side * m.w, m.y + m.corner
    return ellipse_pts((cu, cv), 0.13, 0.11, n=20)


_MOUTH_SHAPERS = ("Smiling", "AU_12", "AU_15", "AU_20", "Big_Lips", "Mouth_Slightly_Open", "AU_25", "AU_26")


def _brow_line(concepts: frozenset[str], side: int, tilt: float) -> np.ndarray:
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


def _brow_half_thickness(concepts: frozenset[str]) -> np.ndarray:
    th = 0.055 if "Bushy_Eyebrows" in concepts else 0.026
    return th * np.linspace(1.0, 0.6, 9)


def _brow_polygon(concepts: frozenset[str], side: int, tilt: float, part: slice = slice(None)):
    line = _brow_line(concepts, side, tilt)
    return band_polygon(line[part], _brow_half_thickness(concepts)[part])


_BROW_SHAPERS = ("Arched_Eyebrows", "Bushy_Eyebrows", "AU_1", "AU_2", "AU_4")


def _nose_polygon(concepts: frozenset[str]) -> list[tuple[float, float]]:
    base, tip = 0.13, 0.27
    if "Big_Nose" in concepts:
        base, tip = 0.2, 0.33
    if "Pointy_Nose" in concepts:
        base *= 0.8
        return [(-0.045, -0.12), (0.045, -0.12), (base, tip - 0.05), (0.0, tip + 0.08), (-base, tip - 0.05)]
    return [(-0.045, -0.12), (0.045, -0.12), (base, tip - 0.06), (base * 0.75, tip), (-base * 0.75, tip), (-base, tip - 0.06)]


def _eye_radii(concepts: frozenset[str]) -> tuple[float, float]:
    return (0.17, 0.12) if "AU_5" in concepts else (0.165, 0.078)


EYE_U, EYE_V = 0.4, -0.15
CHEEK_U, CHEEK_V = 0.55, 0.2


def _beard_area(concepts: frozenset[str], outline: list[tuple[float, float]]):
    """The beard area: the face below the nose, minus the mouth (polygon, hole)."""
    lower = [(u, v) for u, v in outline if v >= 0.3]
    lower.sort(key=lambda p: np.arctan2(p[1], p[0]))  # from right to left along the jaw
    area = [(lower[0][0], 0.3)] + lower + [(lower[-1][0], 0.3)]
    return area, _mouth_outer(_mouth_shape(concepts))


# ----------------------------------------------------------------------------- renderer
def render_face(spec: FaceSpec, size: tuple[int, int] = (178, 218)) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw one face. Returns (image uint8 [H, W, 3], masks {concept: bool [H, W]}).

    ``masks`` holds an entry for every concept in ``spec.concepts`` and for the 8 facial parts
    (every face has them). Unknown concept names raise ``ValueError`` (callers validate first).
    """
    unknown = set(spec.concepts) - DRAWABLE_CONCEPTS
    if unknown:
        raise ValueError(f"cannot draw concepts {sorted(unknown)}")
    c = frozenset(spec.concepts)
    j = spec.jitter
    hue = _BACKGROUND_HUES.get(spec.ethnicity, 0.0) + j.hue_offset
    background = hsv(hue, *j.background_sv)
    canvas = FaceCanvas(size, _frame(spec, size), background)
    skin = _skin_colour(spec)
    hair = _hair_colour(spec)
    line_dark = shade(skin, 0.55)

    def texture_rng(feature: int) -> np.random.Generator:
        # one stream per textured cue, so toggling one cue never moves another cue's dots
        return np.random.default_rng([j.noise_seed, feature])
    fw = canvas.frame.width

    long_hair = spec.gender == "Female"
    exponent = 2.0 if long_hair else 2.6
    outline = superellipse_pts(1.0, 1.0, exponent, n=72)

    # -- behind the face: long hair, shoulders, neck, double chin
    if long_hair:
        back = ellipse_pts((0.0, -0.2), 1.22, 1.05, n=28, start=180, stop=360) + [(1.25, 1.35), (-1.25, 1.35)]
        canvas.polygon(back, hair)
    canvas.polygon(ellipse_pts((0.0, 2.0), 1.9, 0.85, n=36), j.clothes_colour)
    canvas.polygon([(-0.38, 0.6), (0.38, 0.6), (0.42, 1.4), (-0.42, 1.4)], shade(skin, 0.88))
    if "Double_Chin" in c:
        chin2 = ellipse_pts((0.0, 0.96), 0.42, 0.16, n=28)
        canvas.polygon(chin2, shade(skin, 0.92), ["Double_Chin"])

    # -- the face
    canvas.polygon(outline, skin)

    # cheeks (part shading) and cheek attributes
    for side, name in ((1, "left_cheek"), (-1, "right_cheek")):
        canvas.polygon(ellipse_pts((side * CHEEK_U, CHEEK_V), 0.2, 0.17), rgba(shade(skin, 0.9), 70), [name])
    for side in (1, -1):
        if "High_Cheekbones" in c:
            zone = ellipse_pts((side * 0.5, 0.11), 0.22, 0.12, n=24)
            canvas.polygon(zone, None, ["High_Cheekbones"], mask_only=True)
            canvas.polygon(ellipse_pts((side * 0.5, 0.06), 0.17, 0.05), rgba(shade(skin, 1.35), 200))
            shadow = quad_curve((side * 0.34, 0.2), (side * 0.52, 0.16), (side * 0.7, 0.07), n=7)
            canvas.line([tuple(p) for p in shadow.tolist()], shade(skin, 0.62), fw(0.035))
        if "Rosy_Cheeks" in c:
            canvas.polygon(ellipse_pts((side * CHEEK_U, 0.22), 0.16, 0.12), rgba((225, 60, 80), 135), ["Rosy_Cheeks"])
        if "AU_6" in c:
            bulge = ellipse_pts((side * 0.42, 0.03), 0.17, 0.07)
            canvas.polygon(bulge, rgba(shade(skin, 1.25), 180), ["AU_6"])
            lower_arc = quad_curve((side * 0.27, 0.06), (side * 0.42, 0.1), (side * 0.58, 0.06), n=7)
            canvas.line([tuple(p) for p in lower_arc.tolist()], line_dark, fw(0.02), ["AU_6"])
            for dv in (-0.05, 0.0, 0.05):
                canvas.line([(side * 0.6, EYE_V + dv * 0.5), (side * 0.72, EYE_V + dv)], line_dark, fw(0.015), ["AU_6"])
        if "Bags_Under_Eyes" in c:
            bag = band_polygon(quad_curve((side * 0.27, -0.06), (side * 0.4, -0.015), (side * 0.53, -0.06), n=9), 0.022)
            canvas.polygon(bag, rgba((90, 50, 90), 110), ["Bags_Under_Eyes"])

    # beard area: stubble, clean (No_Beard), unannotated jaw beard
    area, mouth_hole = _beard_area(c, outline)
    if "No_Beard" in c:
        canvas.polygon(area, None, ["No_Beard"], mask_only=True)
        canvas.polygon(mouth_hole, None, ["No_Beard"], mask_only=True, erase=True)
    if "5_o_Clock_Shadow" in c:
        canvas.polygon(area, None, ["5_o_Clock_Shadow"], mask_only=True)
        canvas.polygon(mouth_hole, None, ["5_o_Clock_Shadow"], mask_only=True, erase=True)
        canvas.speckle(canvas.mask_array("5_o_Clock_Shadow"), 0.3, (30, 25, 25), 0.6, texture_rng(1))
    if spec.beard:
        inner = superellipse_pts(0.7, 0.72, exponent, n=48, centre=(0.0, 0.05))
        band = canvas.region_mask(area, holes=[inner])
        canvas.speckle(band, 0.85, hair, 0.9, texture_rng(2))

    # -- hair cap, grey streaks, forehead lines
    cap_top = ellipse_pts((0.0, -0.05), 1.08, 1.1, n=25, start=180, stop=360)
    hairline = quad_curve((0.98, -0.45), (0.0, -0.66 if long_hair else -0.6), (-0.98, -0.45), n=13)
    canvas.polygon(cap_top + [tuple(p) for p in hairline.tolist()], hair)
    if spec.age in ("forty_to_sixty", "sixty_plus"):
        grey = (215, 215, 215) if spec.age == "sixty_plus" else (180, 180, 180)
        for k in range(6 if spec.age == "sixty_plus" else 3):
            s = -0.75 + 1.5 * (k + 0.5) / (6 if spec.age == "sixty_plus" else 3)
            canvas.line([(s * 0.85, -0.6 + 0.12 * s * s), (s * 0.95, -0.95 + 0.3 * s * s)], grey, fw(0.03))
        for k in range(4 if spec.age == "sixty_plus" else 2):
            v = -0.49 - 0.03 * k
            canvas.line([(-0.32, v + 0.015), (0.0, v - 0.01), (0.32, v + 0.015)], shade(skin, 0.7), 1)

    # -- nose
    nose_pts = _nose_polygon(c)
    nose_concepts = ["nose"] + [k for k in ("Big_Nose", "Pointy_Nose") if k in c]
    canvas.polygon(nose_pts, shade(skin, 0.9), nose_concepts)
    for k in ("Big_Nose", "Pointy_Nose"):
        if k in c:  # the area the nose covered without this cue belongs to the cue too
            canvas.polygon(_nose_polygon(c - {k}), None, [k], mask_only=True)
    base = 0.2 if "Big_Nose" in c else 0.13
    if "Pointy_Nose" in c:
        base *= 0.8
    tip_v = 0.33 if "Big_Nose" in c else 0.27
    canvas.line([(-0.04, -0.08), (-base * 0.9, tip_v - 0.07)], line_dark, fw(0.02))
    canvas.line([(0.04, -0.08), (base * 0.9, tip_v - 0.07)], line_dark, fw(0.02))
    for side in (1, -1):
        canvas.polygon(ellipse_pts((side * base * 0.45, tip_v - 0.025), base * 0.28, 0.018, n=12), shade(skin, 0.35))
    if "Pointy_Nose" in c:
        canvas.polygon([(-0.05, tip_v - 0.02), (0.05, tip_v - 0.02), (0.0, tip_v + 0.075)], shade(skin, 0.7))
    if "AU_9" in c:
        zone = [(-0.15, -0.11), (0.15, -0.11), (0.15, 0.07), (-0.15, 0.07)]
        canvas.polygon(zone, None, ["AU_9"], mask_only=True)
        canvas.polygon(ellipse_pts((0.0, -0.02), 0.12, 0.075, n=20), rgba(shade(skin, 0.6), 90))
        for v in (-0.07, -0.03, 0.01, 0.05):
            canvas.line([(-0.11, v + 0.01), (0.0, v - 0.008), (0.11, v + 0.01)], shade(skin, 0.5), fw(0.018))

    # -- eyes
    rx, ry = _eye_radii(c)
    iris_colour = mix((60, 40, 25), (40, 90, 120), (j.noise_seed % 7) / 7.0)
    for side, name in ((1, "left_eye"), (-1, "right_eye")):
        centre = (side * EYE_U, EYE_V)
        eye = ellipse_pts(centre, rx, ry, n=28)
        eye_concepts = [name] + [k for k in ("AU_5", "Narrow_Eyes") if k in c]
        canvas.polygon(eye, (244, 242, 238), eye_concepts, outline=line_dark, width=1)
        r_iris = 0.068
        canvas.polygon(ellipse_pts(centre, r_iris, r_iris * canvas.frame.fw / canvas.frame.fh, n=18), iris_colour)
        canvas.polygon(ellipse_pts(centre, 0.03, 0.03 * canvas.frame.fw / canvas.frame.fh, n=12), (10, 10, 10))
        if "Narrow_Eyes" in c:
            lid_colour = shade(skin, 0.8)
            upper = ellipse_pts(centre, rx, ry, n=15, start=180, stop=360)
            upper_lid = upper + [(centre[0] + rx, centre[1] - 0.012), (centre[0] - rx, centre[1] - 0.012)]
            canvas.polygon(upper_lid, lid_colour, outline=line_dark, width=1)
            lower = ellipse_pts(centre, rx, ry, n=15, start=0, stop=180)
            lower_lid = lower + [(centre[0] - rx, centre[1] + 0.022), (centre[0] + rx, centre[1] + 0.022)]
            canvas.polygon(lower_lid, lid_colour)

    # -- brows
    brow_colour = shade(hair, 0.8)
    for side, name in ((1, "left_brow"), (-1, "right_brow")):
        poly = _brow_polygon(c, side, j.brow_tilt)
        brow_concepts = [name] + [k for k in ("Arched_Eyebrows", "Bushy_Eyebrows", "AU_4") if k in c]
        canvas.polygon(poly, brow_colour, brow_concepts)
        # shape cues also own the place the brow left (with/without the cue)
        for k in ("Arched_Eyebrows", "AU_4"):
            if k in c:
                canvas.polygon(_brow_polygon(c - {k}, side, j.brow_tilt), None, [k], mask_only=True)
        for k, part in (("AU_1", slice(0, 5)), ("AU_2", slice(4, 9))):
            if k in c:
                canvas.polygon(_brow_polygon(c, side, j.brow_tilt, part), None, [k], mask_only=True)
                canvas.polygon(_brow_polygon(c - {k}, side, j.brow_tilt, part), None, [k], mask_only=True)
        if "Bushy_Eyebrows" in c:
            line = _brow_line(c, side, j.brow_tilt)
            for k in range(1, 8):
                u, v = line[k]
                canvas.line([(u - 0.02 * side, v + 0.03), (u + 0.02 * side, v - 0.03)], shade(brow_colour, 0.6), 1)
    if "AU_4" in c:
        for du in (-0.045, 0.045):
            canvas.line([(du, -0.33), (du * 0.8, -0.22)], line_dark, fw(0.02), ["AU_4"])

    # -- mouth
    m = _mouth_shape(c)
    lip_colour = mix(skin, (170, 60, 70), 0.35 + j.lip_tint)
    if "Wearing_Lipstick" in c:
        lip_colour = (200, 18, 40)
    u, ut, ub, lt, lb = _mouth_edges(m)
    outer = _poly(u, ut, lb)
    mouth_concepts = ["mouth"] + [k for k in ("Smiling", "Mouth_Slightly_Open", "AU_20", "AU_25") if k in c]
    canvas.polygon(outer, lip_colour, mouth_concepts)
    creased = [k for k in ("AU_12", "AU_15") if k in c]
    for k in _MOUTH_SHAPERS:
        if k in c:  # shape cues own the mouth as drawn with and without them (creases included)
            without = _mouth_shape(c - {k})
            canvas.polygon(outer, None, [k], mask_only=True)
            canvas.polygon(_mouth_outer(without), None, [k], mask_only=True)
            if creased:
                for side in (1, -1):
                    canvas.polygon(_mouth_corner_zone(m, side), None, [k], mask_only=True)
                    canvas.polygon(_mouth_corner_zone(without, side), None, [k], mask_only=True)
    lips_only = [k for k in ("Big_Lips", "Wearing_Lipstick") if k in c]
    for k in lips_only:
        canvas.polygon(outer, None, [k], mask_only=True)
    if m.gap > 0.005:
        gap_poly = _poly(u, ub, lt)
        canvas.polygon(gap_poly, (55, 18, 22))
        for k in lips_only:
            canvas.polygon(gap_poly, None, [k], mask_only=True, erase=True)
        teeth_bottom = np.minimum(ub + 0.03, lt)
        canvas.polygon(_poly(u[3:-3], ub[3:-3], teeth_bottom[3:-3]), (236, 232, 220))
    else:
        canvas.line(list(zip(u.tolist(), ((ub + lt) / 2).tolist())), shade(lip_colour, 0.45), fw(0.015))
    for k, sign in (("AU_12", -1), ("AU_15", 1)):
        if k in c:
            for side in (1, -1):
                for shape in (m, _mouth_shape(c - {k})):
                    canvas.polygon(_mouth_corner_zone(shape, side), None, [k], mask_only=True)
                cu, cv = side * m.w, m.y + m.corner
                crease = quad_curve((cu + side * 0.02, cv - 0.06 * -sign), (cu + side * 0.07, cv), (cu + side * 0.04, cv + 0.06 * -sign), n=5)
                canvas.line([tuple(p) for p in crease.tolist()], line_dark, fw(0.02))

    # -- chin and facial hair
    if "Double_Chin" in c:
        crease = quad_curve((-0.3, 0.92), (0.0, 0.99), (0.3, 0.92), n=9)
        canvas.line([tuple(p) for p in crease.tolist()], shade(skin, 0.6), fw(0.02))
    if "AU_17" in c:
        boss = ellipse_pts((0.0, 0.8), 0.22, 0.11)
        canvas.polygon(boss, rgba(shade(skin, 1.2), 160), ["AU_17"])
        canvas.line([tuple(p) for p in quad_curve((-0.17, 0.72), (0.0, 0.69), (0.17, 0.72), n=7).tolist()], line_dark, fw(0.025))
        canvas.speckle(canvas.region_mask(boss), 0.18, shade(skin, 0.6), 0.7, texture_rng(3))
    if "AU_26" in c:
        jaw = [(-m.w, m.y), (m.w, m.y), (0.5, 0.86), (0.0, 1.02), (-0.5, 0.86)]
        canvas.polygon(jaw, None, ["AU_26"], mask_only=True)
        canvas.line([tuple(p) for p in quad_curve((-0.4, 0.84), (0.0, 0.97), (0.4, 0.84), n=9).tolist()], line_dark, fw(0.025))
    if "Mustache" in c:
        top = quad_curve((-0.3, 0.47), (0.0, 0.36), (0.3, 0.47), n=9)
        bottom = quad_curve((0.33, 0.5), (0.0, 0.43), (-0.33, 0.5), n=9)
        canvas.polygon([tuple(p) for p in np.concatenate([top, bottom]).tolist()], shade(hair, 0.85), ["Mustache"])
    if "Goatee" in c:
        goatee = [(-0.16, 0.69), (0.16, 0.69), (0.21, 0.82), (0.09, 0.96), (-0.09, 0.96), (-0.21, 0.82)]
        canvas.polygon(goatee, shade(hair, 0.85), ["Goatee"])
        canvas.speckle(canvas.mask_array("Goatee"), 0.25, shade(hair, 0.5), 0.8, texture_rng(4))

    # -- glasses last: they sit on top of eyes and brows
    if "Eyeglasses" in c:
        frame_w = fw(0.04)
        for side in (1, -1):
            lens = ellipse_pts((side * EYE_U, EYE_V - 0.01), 0.25, 0.16, n=32)
            canvas.polygon(lens, rgba((170, 200, 230), 70), ["Eyeglasses"], outline=j.frame_colour, width=frame_w)
            canvas.line([(side * 0.65, EYE_V - 0.04), (side * 0.97, EYE_V - 0.09)], j.frame_colour, frame_w, ["Eyeglasses"])
        canvas.line([(-0.15, EYE_V - 0.04), (0.0, EYE_V - 0.07), (0.15, EYE_V - 0.04)], j.frame_colour, frame_w, ["Eyeglasses"])

    image = canvas.array()
    masks = canvas.masks()
    for name in PARTS:
        masks.setdefault(name, np.zeros(image.shape[:2], bool))
    return image, {k: v for k, v in masks.items() if k in c or k in PARTS}
