"""Count, from a dissection's ``scores.npz``, the units that carry the planted concept and subgroup.

Nothing here knows which model was biased: the counts come from the dissection alone
(DESIGN.md §2's pairing rule and bias cut-offs, as stored in ``paired`` and ``biased_<F>``, and
§2c's significant subsets ``paired_significant`` and ``biased_significant_<F>``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from hnd_jax.errors import HndError


def planted_unit_counts(scores_path: str | Path, concept: str, family: str, group: str) -> dict[str, Any]:
    """Units of one layer paired with ``concept`` and biased toward ``family``/``group``.

    Returns ``units``, ``localizable``, ``paired_with_planted_concept`` (P(c|u) > 1.5/|R|),
    ``top_concept_is_planted`` (localizable units whose best IoU is the concept),
    ``biased_toward_planted_group`` and ``biased_toward`` (every subgroup of the family -> units),
    and the significant subsets (DESIGN.md §2c) ``paired_significant_with_planted_concept`` and
    ``biased_significant_toward_planted_group`` (None when the results predate significance).
    """
    with np.load(scores_path) as z:
        concepts = [str(c) for c in z["concepts"]]
        key = f"global_groups_{family}"
        if concept not in concepts:
            raise HndError(f"{scores_path}: concept {concept!r} is not in the results")
        if key not in z.files:
            raise HndError(f"{scores_path}: global family {family!r} was not scored")
        groups = [str(g) for g in z[key]]
        if group not in groups:
            raise HndError(f"{scores_path}: {family} has no subgroup {group!r} (has {', '.join(groups)})")
        c, g = concepts.index(concept), groups.index(group)
        biased = np.asarray(z[f"biased_{family}"], bool)
        localizable = np.asarray(z["localizable"], bool)
        sig_key = f"biased_significant_{family}"
        paired_sig = (
            int((np.asarray(z["paired_significant"], bool) & np.asarray(z["paired"], bool))[:, c].sum())
            if "paired_significant" in z.files else None
        )
        biased_sig = int((np.asarray(z[sig_key], bool) & biased)[:, g].sum()) if sig_key in z.files else None
        return {
            "units": int(localizable.shape[0]),
            "localizable": int(localizable.sum()),
            "paired_with_planted_concept": int(np.asarray(z["paired"], bool)[:, c].sum()),
            "top_concept_is_planted": int(((np.asarray(z["top_concept"]) == c) & localizable).sum()),
            "biased_toward_planted_group": int(biased[:, g].sum()),
            "biased_toward": {name: int(biased[:, i].sum()) for i, name in enumerate(groups)},
            "paired_significant_with_planted_concept": paired_sig,
            "biased_significant_toward_planted_group": biased_sig,
        }


#: One-sided z for p < 0.01: the demo's bar for "clearly more".
Z_CLEARLY_MORE = 2.326


def difference_z(biased: int, control: int, units: int) -> float:
    """Two-proportion z statistic of ``biased/units`` over ``control/units`` (pooled variance).

    Both models have the same ``units`` (same architecture and layers). The z says how far the
    difference sits outside what two unit populations of this size show by chance.
    """
    if units <= 0:
        raise ValueError("units must be positive")
    pooled = (biased + control) / (2.0 * units)
    if pooled <= 0.0 or pooled >= 1.0:
        return 0.0 if biased == control else math.copysign(math.inf, biased - control)
    return (biased - control) / units / math.sqrt(pooled * (1.0 - pooled) * 2.0 / units)


def clearly_more(biased: int, control: int, units: int) -> bool:
    """The demo's criterion: at least 3 units more, and significant (one-sided p < 0.01)."""
    return biased - control >= 3 and difference_z(biased, control, units) >= Z_CLEARLY_MORE
