"""Plain-text notes about a run that both the HTML report and the console summary give.

Today: which global families (Age, Gender, Ethnicity, skin_tone) were *not* scored, why, and what to
pass to get them. ``dissection.json`` records them as ``global_families.skipped`` ({family: reason});
the reasons are written by the pipeline (``no 'Age/<group>' arrays in acts.npy`` for an activations
file, ``skipped: no images`` when the dictionary has no images of the family).
"""

from __future__ import annotations

from typing import Any


def skipped_global_families(meta: dict[str, Any]) -> dict[str, str]:
    """{family: reason} of the global families the run did not score (empty when all were, or unrecorded)."""
    record = meta.get("global_families")
    if not isinstance(record, dict):
        return {}
    skipped = record.get("skipped")
    if not isinstance(skipped, dict):
        return {}
    return {str(k): str(v) for k, v in skipped.items()}


def from_activations_file(meta: dict[str, Any]) -> bool:
    """True when the run scored activations from a file (``hnd dissect --activations``)."""
    model = meta.get("model")
    return meta.get("source") == "activations" or (
        isinstance(model, dict) and model.get("kind") == "external activations"
    )


def global_families_advice(meta: dict[str, Any]) -> str:
    """What to pass to get the skipped global families scored, for this kind of run."""
    if from_activations_file(meta):
        return (
            "to score them, pass --activations an .npz holding 'local' and one '<Family>/<group>' array per "
            "subgroup (e.g. 'Age/sixty_plus'; hnd extract --dictionary D --for-dissect writes one), "
            "or dissect with --model so hnd runs the model over the global images itself"
        )
    return (
        "to score them, use a Face Dictionary with images under ROOT/non_localizable/<Family>/<group>/ "
        "(the synthetic dictionary has them)"
    )


def grouped_reasons(skipped: dict[str, str]) -> list[tuple[list[str], str]]:
    """(families, reason) with families skipped for the same reason named once, their own name written
    '<Family>' in it: "Age, Gender: no '<Family>/<group>' arrays in a.npy"; a lone family keeps its text."""
    groups: dict[str, list[str]] = {}
    for fam, why in skipped.items():
        groups.setdefault(why.replace(f"'{fam}/", "'<Family>/"), []).append(fam)
    return [(fams, why if len(fams) > 1 else skipped[fams[0]]) for why, fams in groups.items()]


def global_families_note(meta: dict[str, Any]) -> str | None:
    """One paragraph naming the unscored global families, why, and how to get them; None when none was skipped."""
    skipped = skipped_global_families(meta)
    if not skipped:
        return None
    groups = grouped_reasons(skipped)
    reasons = groups[0][1] if len(groups) == 1 else "; ".join(f"{', '.join(fams)}: {why}" for fams, why in groups)
    advice = global_families_advice(meta)
    return f"Global families not scored ({', '.join(skipped)}): {reasons}. {advice[0].upper()}{advice[1:]}."
