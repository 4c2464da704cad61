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

from hnd_jax.dictionary.synthetic.draw import (
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
from hnd_jax.dictionary.synthetic.shapes import (
    CHEEK_U,
    CHEEK_V,
    EYE_U,
    EYE_V,
    MOUTH_SHAPERS,
    band_between,
    beard_area,
    brow_line,
    brow_polygon,
    eye_radii,
    mouth_corner_zone,
    mouth_edges,
    mouth_outer,
    mouth_shape,
    nose_base_tip,
    nose_polygon,
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

    ``skin_tone`` is continuous, 0 (brightest) .. 1 (darkest); groups by :data:`SKIN_TONE_RANGES`.
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


# ----------------------------------------------------------------------------- colours and frame
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


# ----------------------------------------------------------------------------- renderer
@dataclass
class _Face:
    """What every drawing layer needs: the canvas, the present concepts and the face's colours."""

    canvas: FaceCanvas
    spec: FaceSpec
    concepts: frozenset[str]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    line_dark: tuple[int, int, int]
    outline: list[tuple[float, float]]  # the face oval (a superellipse)

    @property
    def long_hair(self) -> bool:
        return self.spec.gender == "Female"

    def width(self, w: float) -> int:
        return self.canvas.frame.width(w)

    def texture_rng(self, feature: int) -> np.random.Generator:
        """One random stream per textured cue, so toggling one cue never moves another cue's dots."""
        return np.random.default_rng([self.spec.jitter.noise_seed, feature])


def _curve(p0, p1, p2, n: int) -> list[tuple[float, float]]:
    return [tuple(p) for p in quad_curve(p0, p1, p2, n=n).tolist()]


def _draw_behind_face(f: _Face) -> None:
    """Long hair (the Female stand-in), shoulders, neck, and the double chin under the jaw."""
    cv = f.canvas
    if f.long_hair:
        back = ellipse_pts((0.0, -0.2), 1.22, 1.05, n=28, start=180, stop=360) + [(1.25, 1.35), (-1.25, 1.35)]
        cv.polygon(back, f.hair)
    cv.polygon(ellipse_pts((0.0, 2.0), 1.9, 0.85, n=36), f.spec.jitter.clothes_colour)
    cv.polygon([(-0.38, 0.6), (0.38, 0.6), (0.42, 1.4), (-0.42, 1.4)], shade(f.skin, 0.88))
    if "Double_Chin" in f.concepts:
        cv.polygon(ellipse_pts((0.0, 0.96), 0.42, 0.16, n=28), shade(f.skin, 0.92), ["Double_Chin"])
    cv.polygon(f.outline, f.skin)


def _draw_cheeks(f: _Face) -> None:
    """Cheek shading (the parts), blush, cheekbones, AU_6's raised cheeks, bags under the eyes."""
    cv, c, skin = f.canvas, f.concepts, f.skin
    for side, name in ((1, "left_cheek"), (-1, "right_cheek")):
        cv.polygon(ellipse_pts((side * CHEEK_U, CHEEK_V), 0.2, 0.17), rgba(shade(skin, 0.9), 70), [name])
    for side in (1, -1):
        if "High_Cheekbones" in c:
            cv.polygon(ellipse_pts((side * 0.5, 0.11), 0.22, 0.12, n=24), None, ["High_Cheekbones"], mask_only=True)
            cv.polygon(ellipse_pts((side * 0.5, 0.06), 0.17, 0.05), rgba(shade(skin, 1.35), 200))
            cv.line(_curve((side * 0.34, 0.2), (side * 0.52, 0.16), (side * 0.7, 0.07), 7), shade(skin, 0.62), f.width(0.035))
        if "Rosy_Cheeks" in c:
            cv.polygon(ellipse_pts((side * CHEEK_U, 0.22), 0.16, 0.12), rgba((225, 60, 80), 135), ["Rosy_Cheeks"])
        if "AU_6" in c:
            cv.polygon(ellipse_pts((side * 0.42, 0.03), 0.17, 0.07), rgba(shade(skin, 1.25), 180), ["AU_6"])
            lower_arc = _curve((side * 0.27, 0.06), (side * 0.42, 0.1), (side * 0.58, 0.06), 7)
            cv.line(lower_arc, f.line_dark, f.width(0.02), ["AU_6"])
            for dv in (-0.05, 0.0, 0.05):  # crow's feet
                cv.line([(side * 0.6, EYE_V + dv * 0.5), (side * 0.72, EYE_V + dv)], f.line_dark, f.width(0.015), ["AU_6"])
        if "Bags_Under_Eyes" in c:
            bag = band_polygon(quad_curve((side * 0.27, -0.06), (side * 0.4, -0.015), (side * 0.53, -0.06), n=9), 0.022)
            cv.polygon(bag, rgba((90, 50, 90), 110), ["Bags_Under_Eyes"])


def _draw_beard_area(f: _Face) -> None:
    """Stubble, the clean area of No_Beard (a mask only), and the unannotated jaw beard."""
    cv, c = f.canvas, f.concepts
    area, mouth_hole = beard_area(c, f.outline)
    for name in ("No_Beard", "5_o_Clock_Shadow"):
        if name in c:
            cv.polygon(area, None, [name], mask_only=True)
            cv.polygon(mouth_hole, None, [name], mask_only=True, erase=True)
    if "5_o_Clock_Shadow" in c:
        cv.speckle(cv.mask_array("5_o_Clock_Shadow"), 0.3, (30, 25, 25), 0.6, f.texture_rng(1))
    if f.spec.beard:
        exponent = 2.0 if f.long_hair else 2.6
        inner = superellipse_pts(0.7, 0.72, exponent, n=48, centre=(0.0, 0.05))
        cv.speckle(cv.region_mask(area, holes=[inner]), 0.85, f.hair, 0.9, f.texture_rng(2))


def _draw_hair_and_age(f: _Face) -> None:
    """The hair cap, grey streaks and forehead lines (the Age proxies)."""
    cv, age = f.canvas, f.spec.age
    cap_top = ellipse_pts((0.0, -0.05), 1.08, 1.1, n=25, start=180, stop=360)
    hairline = _curve((0.98, -0.45), (0.0, -0.66 if f.long_hair else -0.6), (-0.98, -0.45), 13)
    cv.polygon(cap_top + hairline, f.hair)
    if age not in ("forty_to_sixty", "sixty_plus"):
        return
    old = age == "sixty_plus"
    streaks, lines = (6, 4) if old else (3, 2)
    grey = (215, 215, 215) if old else (180, 180, 180)
    for k in range(streaks):
        s = -0.75 + 1.5 * (k + 0.5) / streaks
        cv.line([(s * 0.85, -0.6 + 0.12 * s * s), (s * 0.95, -0.95 + 0.3 * s * s)], grey, f.width(0.03))
    for k in range(lines):
        v = -0.49 - 0.03 * k
        cv.line([(-0.32, v + 0.015), (0.0, v - 0.01), (0.32, v + 0.015)], shade(f.skin, 0.7), 1)


def _draw_nose(f: _Face) -> None:
    """The nose wedge and nostrils; Big_Nose, Pointy_Nose; AU_9's wrinkled bridge."""
    cv, c, skin = f.canvas, f.concepts, f.skin
    cv.polygon(nose_polygon(c), shade(skin, 0.9), ["nose"] + [k for k in ("Big_Nose", "Pointy_Nose") if k in c])
    for k in ("Big_Nose", "Pointy_Nose"):
        if k in c:  # the area the nose covered without this cue belongs to the cue too
            cv.polygon(nose_polygon(c - {k}), None, [k], mask_only=True)
    base, tip_v = nose_base_tip(c)
    for side in (1, -1):
        cv.line([(side * 0.04, -0.08), (side * base * 0.9, tip_v - 0.07)], f.line_dark, f.width(0.02))
    for side in (1, -1):
        cv.polygon(ellipse_pts((side * base * 0.45, tip_v - 0.025), base * 0.28, 0.018, n=12), shade(skin, 0.35))
    if "Pointy_Nose" in c:
        cv.polygon([(-0.05, tip_v - 0.02), (0.05, tip_v - 0.02), (0.0, tip_v + 0.075)], shade(skin, 0.7))
    if "AU_9" in c:
        cv.polygon([(-0.15, -0.11), (0.15, -0.11), (0.15, 0.07), (-0.15, 0.07)], None, ["AU_9"], mask_only=True)
        cv.polygon(ellipse_pts((0.0, -0.02), 0.12, 0.075, n=20), rgba(shade(skin, 0.6), 90))
        for v in (-0.07, -0.03, 0.01, 0.05):
            cv.line([(-0.11, v + 0.01), (0.0, v - 0.008), (0.11, v + 0.01)], shade(skin, 0.5), f.width(0.018))


def _draw_eyes(f: _Face) -> None:
    """Eyes (parts), AU_5's wide-open eyes, Narrow_Eyes' heavy lids (the mask is the whole eye)."""
    cv, c = f.canvas, f.concepts
    rx, ry = eye_radii(c)
    iris_colour = mix((60, 40, 25), (40, 90, 120), (f.spec.jitter.noise_seed % 7) / 7.0)
    squash = cv.frame.fw / cv.frame.fh  # round iris in pixels
    for side, name in ((1, "left_eye"), (-1, "right_eye")):
        centre = (side * EYE_U, EYE_V)
        eye_concepts = [name] + [k for k in ("AU_5", "Narrow_Eyes") if k in c]
        cv.polygon(ellipse_pts(centre, rx, ry, n=28), (244, 242, 238), eye_concepts, outline=f.line_dark, width=1)
        cv.polygon(ellipse_pts(centre, 0.068, 0.068 * squash, n=18), iris_colour)
        cv.polygon(ellipse_pts(centre, 0.03, 0.03 * squash, n=12), (10, 10, 10))
        if "Narrow_Eyes" in c:
            lid_colour = shade(f.skin, 0.8)
            upper = ellipse_pts(centre, rx, ry, n=15, start=180, stop=360)
            upper += [(centre[0] + rx, centre[1] - 0.012), (centre[0] - rx, centre[1] - 0.012)]
            cv.polygon(upper, lid_colour, outline=f.line_dark, width=1)
            lower = ellipse_pts(centre, rx, ry, n=15, start=0, stop=180)
            lower += [(centre[0] - rx, centre[1] + 0.022), (centre[0] + rx, centre[1] + 0.022)]
            cv.polygon(lower, lid_colour)


def _draw_brows(f: _Face) -> None:
    """Brows (parts); Arched, Bushy; AU_1/AU_2 raise the inner/outer half, AU_4 lowers and furrows."""
    cv, c, tilt = f.canvas, f.concepts, f.spec.jitter.brow_tilt
    brow_colour = shade(f.hair, 0.8)
    for side, name in ((1, "left_brow"), (-1, "right_brow")):
        brow_concepts = [name] + [k for k in ("Arched_Eyebrows", "Bushy_Eyebrows", "AU_4") if k in c]
        cv.polygon(brow_polygon(c, side, tilt), brow_colour, brow_concepts)
        # shape cues also own the place the brow left (with/without the cue)
        for k in ("Arched_Eyebrows", "AU_4"):
            if k in c:
                cv.polygon(brow_polygon(c - {k}, side, tilt), None, [k], mask_only=True)
        for k, part in (("AU_1", slice(0, 5)), ("AU_2", slice(4, 9))):
            if k in c:
                cv.polygon(brow_polygon(c, side, tilt, part), None, [k], mask_only=True)
                cv.polygon(brow_polygon(c - {k}, side, tilt, part), None, [k], mask_only=True)
        if "Bushy_Eyebrows" in c:
            line = brow_line(c, side, tilt)
            for k in range(1, 8):
                u, v = line[k]
                cv.line([(u - 0.02 * side, v + 0.03), (u + 0.02 * side, v - 0.03)], shade(brow_colour, 0.6), 1)
    if "AU_4" in c:
        for du in (-0.045, 0.045):
            cv.line([(du, -0.33), (du * 0.8, -0.22)], f.line_dark, f.width(0.02), ["AU_4"])


def _draw_mouth(f: _Face) -> None:
    """Lips (part); every mouth cue: shape (smile, pulls, stretch, openings, big lips) and lipstick."""
    cv, c = f.canvas, f.concepts
    m = mouth_shape(c)
    lip_colour = (200, 18, 40) if "Wearing_Lipstick" in c else mix(f.skin, (170, 60, 70), 0.35 + f.spec.jitter.lip_tint)
    u, ut, ub, lt, lb = mouth_edges(m)
    outer = band_between(u, ut, lb)
    cv.polygon(outer, lip_colour, ["mouth"] + [k for k in ("Smiling", "Mouth_Slightly_Open", "AU_20", "AU_25") if k in c])
    creased = any(k in c for k in ("AU_12", "AU_15"))
    for k in MOUTH_SHAPERS:
        if k in c:  # shape cues own the mouth as drawn with and without them (creases included)
            without = mouth_shape(c - {k})
            cv.polygon(outer, None, [k], mask_only=True)
            cv.polygon(mouth_outer(without), None, [k], mask_only=True)
            if creased:
                for side in (1, -1):
                    cv.polygon(mouth_corner_zone(m, side), None, [k], mask_only=True)
                    cv.polygon(mouth_corner_zone(without, side), None, [k], mask_only=True)
    lips_only = [k for k in ("Big_Lips", "Wearing_Lipstick") if k in c]
    for k in lips_only:
        cv.polygon(outer, None, [k], mask_only=True)
    if m.gap > 0.005:
        gap = band_between(u, ub, lt)
        cv.polygon(gap, (55, 18, 22))
        for k in lips_only:
            cv.polygon(gap, None, [k], mask_only=True, erase=True)
        teeth_bottom = np.minimum(ub + 0.03, lt)
        cv.polygon(band_between(u[3:-3], ub[3:-3], teeth_bottom[3:-3]), (236, 232, 220))
    else:
        cv.line(list(zip(u.tolist(), ((ub + lt) / 2).tolist())), shade(lip_colour, 0.45), f.width(0.015))
    for k, sign in (("AU_12", -1), ("AU_15", 1)):
        if k in c:
            for side in (1, -1):
                cu, cv_ = side * m.w, m.y + m.corner
                crease = _curve((cu + side * 0.02, cv_ + 0.06 * sign), (cu + side * 0.07, cv_), (cu + side * 0.04, cv_ - 0.06 * sign), 5)
                cv.line(crease, f.line_dark, f.width(0.02))


def _draw_chin_and_facial_hair(f: _Face) -> None:
    """Double chin crease, AU_17's raised dimpled chin, AU_26's dropped jaw, mustache, goatee."""
    cv, c, skin = f.canvas, f.concepts, f.skin
    if "Double_Chin" in c:
        cv.line(_curve((-0.3, 0.92), (0.0, 0.99), (0.3, 0.92), 9), shade(skin, 0.6), f.width(0.02))
    if "AU_17" in c:
        boss = ellipse_pts((0.0, 0.8), 0.22, 0.11)
        cv.polygon(boss, rgba(shade(skin, 1.2), 160), ["AU_17"])
        cv.line(_curve((-0.17, 0.72), (0.0, 0.69), (0.17, 0.72), 7), f.line_dark, f.width(0.025))
        cv.speckle(cv.region_mask(boss), 0.18, shade(skin, 0.6), 0.7, f.texture_rng(3))
    if "AU_26" in c:
        m = mouth_shape(c)
        cv.polygon([(-m.w, m.y), (m.w, m.y), (0.5, 0.86), (0.0, 1.02), (-0.5, 0.86)], None, ["AU_26"], mask_only=True)
        cv.line(_curve((-0.4, 0.84), (0.0, 0.97), (0.4, 0.84), 9), f.line_dark, f.width(0.025))
    if "Mustache" in c:
        top = _curve((-0.3, 0.47), (0.0, 0.36), (0.3, 0.47), 9)
        bottom = _curve((0.33, 0.5), (0.0, 0.43), (-0.33, 0.5), 9)
        cv.polygon(top + bottom, shade(f.hair, 0.85), ["Mustache"])
    if "Goatee" in c:
        goatee = [(-0.16, 0.69), (0.16, 0.69), (0.21, 0.82), (0.09, 0.96), (-0.09, 0.96), (-0.21, 0.82)]
        cv.polygon(goatee, shade(f.hair, 0.85), ["Goatee"])
        cv.speckle(cv.mask_array("Goatee"), 0.25, shade(f.hair, 0.5), 0.8, f.texture_rng(4))


def _draw_glasses(f: _Face) -> None:
    """Eyeglasses: tinted lenses in a frame, bridge and temples (on top of eyes and brows)."""
    if "Eyeglasses" not in f.concepts:
        return
    cv, colour = f.canvas, f.spec.jitter.frame_colour
    frame_w = f.width(0.04)
    for side in (1, -1):
        lens = ellipse_pts((side * EYE_U, EYE_V - 0.01), 0.25, 0.16, n=32)
        cv.polygon(lens, rgba((170, 200, 230), 70), ["Eyeglasses"], outline=colour, width=frame_w)
        cv.line([(side * 0.65, EYE_V - 0.04), (side * 0.97, EYE_V - 0.09)], colour, frame_w, ["Eyeglasses"])
    cv.line([(-0.15, EYE_V - 0.04), (0.0, EYE_V - 0.07), (0.15, EYE_V - 0.04)], colour, frame_w, ["Eyeglasses"])


#: Painter's order: each layer draws over the ones before it.
_LAYERS = (
    _draw_behind_face,
    _draw_cheeks,
    _draw_beard_area,
    _draw_hair_and_age,
    _draw_nose,
    _draw_eyes,
    _draw_brows,
    _draw_mouth,
    _draw_chin_and_facial_hair,
    _draw_glasses,
)


def render_face(spec: FaceSpec, size: tuple[int, int] = (178, 218)) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Draw one face in a ``size`` = (W, H) frame. Returns (image uint8 [H, W, 3], masks).

    ``masks`` maps every concept in ``spec.concepts`` and each of the 8 facial parts (every face
    has them) to a bool [H, W] mask of where its cue was drawn. Unknown concept names raise
    ``ValueError`` (callers validate user input first and raise HndError).
    """
    unknown = set(spec.concepts) - DRAWABLE_CONCEPTS
    if unknown:
        raise ValueError(f"cannot draw concepts {sorted(unknown)}")
    j = spec.jitter
    background = hsv(_BACKGROUND_HUES.get(spec.ethnicity, 0.0) + j.hue_offset, *j.background_sv)
    canvas = FaceCanvas(size, _frame(spec, size), background)
    skin = _skin_colour(spec)
    face = _Face(
        canvas=canvas,
        spec=spec,
        concepts=frozenset(spec.concepts),
        skin=skin,
        hair=_hair_colour(spec),
        line_dark=shade(skin, 0.55),
        outline=superellipse_pts(1.0, 1.0, 2.0 if spec.gender == "Female" else 2.6, n=72),
    )
    for layer in _LAYERS:
        layer(face)
    return canvas.array(), canvas.masks()
