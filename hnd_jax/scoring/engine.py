"""Scoring one layer end to end: the two streaming passes and the finalization (DESIGN.md §2-3).

:class:`LayerScorer` wires the accumulators together for one layer; the model pipeline and the
``--activations`` path both drive it the same way::

    scorer = LayerScorer(taxonomy, dictionary.labelled, dictionary.family, U, (h, w), config, mesh)
    s1 = scorer.pass1.init()
    for batch: s1 = scorer.pass1.update(s1, batch)      # Batch: NHWC float32 activations, index, valid
    p1 = scorer.pass1.finalize(s1)                      # thresholds, lo, hi, image_max
    tally = scorer.pass2(p1["thresholds"])
    s2 = tally.init()
    for batch: s2 = tally.update(s2, batch)             # Batch with masks, labelled, family
    p2 = tally.finalize(s2)                             # intersection, union (int64)
    g = {}
    for F in families: stats = scorer.global_stats(n_F); ...; g[F] = {**stats.finalize(s), "group": group_F}
    arrays = scorer.finalize(p1, p2, g)                                   # DESIGN §4 keys + extras

The engine never sees a model or a file; batches may be padded (``valid``) to a multiple of the
device count, see :meth:`hnd_jax.scoring.accumulator.Batch.padded`. The driver that runs these
stages for every activation source is :mod:`hnd_jax.pipeline.stages`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
from jax.sharding import Mesh

from hnd_jax.errors import HndError
from hnd_jax.scoring.config import ScoringConfig
from hnd_jax.scoring.hierarchy import (
    global_probabilities,
    iou_from_counts,
    local_probabilities,
    top_concepts,
    top_images,
)
from hnd_jax.scoring.significance import auc_test, benjamini_hochberg, global_permutation_test
from hnd_jax.scoring.unit_stats import UnitStats
from hnd_jax.sharding import make_data_mesh
from hnd_jax.taxonomy import Taxonomy

#: Store the full per-image max ``image_max`` [N, U] in scores.npz only up to this many values.
IMAGE_MAX_STORE_LIMIT = 1 << 22
#: How many top-activating local images per unit the results list (``top_images``).
TOP_IMAGES = 4


class LayerScorer:
    """Score the U units of one layer against a taxonomy's concepts.

    taxonomy:  the concept taxonomy (concept axis, regions, global families, bias cut-offs).
    labelled:  bool [N, C], concepts labelled on every local image (dictionary order).
    family:    int32 [N], local family of every image.
    num_units: U; map_hw: (h, w) of the raw maps; config: the scoring settings.
    mesh:      mesh with a ``data`` axis (default: one device).
    tally_factory: builds the pass-2 accumulator; defaults to
               :class:`hnd_jax.scoring.tally.IoUTally` (same signature). Tests may inject a reference.
    """

    def __init__(
        self,
        taxonomy: Taxonomy,
        labelled: np.ndarray,
        family: np.ndarray,
        num_units: int,
        map_hw: tuple[int, int],
        config: ScoringConfig,
        mesh: Mesh | None = None,
        tally_factory: Callable[..., Any] | None = None,
    ):
        self.taxonomy = taxonomy
        self.labelled = np.asarray(labelled, bool)
        self.family = np.asarray(family, np.int32)
        C = taxonomy.num_concepts
        if self.labelled.ndim != 2 or self.labelled.shape[1] != C:
            raise ValueError(f"labelled {self.labelled.shape}: expected [N, {C}]")
        if self.family.shape != (self.labelled.shape[0],):
            raise ValueError(f"family {self.family.shape}: expected [{self.labelled.shape[0]}]")
        self.num_images = int(self.labelled.shape[0])
        self.num_units = int(num_units)
        self.map_hw = (int(map_hw[0]), int(map_hw[1]))
        self.config = config
        self.mesh = mesh if mesh is not None else make_data_mesh(1)
        self._tally_factory = tally_factory
        self.pass1 = UnitStats(self.num_units, self.num_images, self.map_hw, config.quantile, self.mesh)

    def pass2(self, thresholds: np.ndarray):
        """The IoU tally accumulator for these thresholds (pass 2)."""
        factory = self._tally_factory
        if factory is None:
            from hnd_jax.scoring.tally import IoUTally as factory
        return factory(
            self.num_units,
            self.taxonomy.concept_family_index,
            self.config.image_size,
            self.map_hw,
            np.asarray(thresholds, np.float32),
            self.config.iou_mode,
            mesh=self.mesh,
        )

    def global_stats(self, num_images: int) -> UnitStats:
        """Per-image max and lo/hi over one global family's ``num_images`` images (no thresholds)."""
        return UnitStats(self.num_units, num_images, self.map_hw, quantile=None, mesh=self.mesh)

    def bias_cutoff(self, family: str) -> float:
        """The family's cut-off: ScoringConfig.bias_cutoffs overrides the taxonomy's."""
        return float(self.config.bias_cutoffs.get(family, self.taxonomy.global_family(family).bias_cutoff))

    def finalize(
        self,
        pass1_result: Mapping[str, np.ndarray],
        pass2_result: Mapping[str, np.ndarray],
        global_results: Mapping[str, Mapping[str, np.ndarray]] | None = None,
        tops: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        """All scores of the layer: the DESIGN §4 keys plus extras.

        ``tops`` [U, 4]: the units' top images when the caller already ranked them (the driver's
        :class:`~hnd_jax.scoring.top_maps.TopMaps` did, to gather their maps); else ranked here.

        pass1_result: ``self.pass1.finalize(...)``; pass2_result: the tally's ``finalize`` (int64
        ``intersection``/``union`` [U, C]); global_results: family name -> ``global_stats(n).finalize``
        output plus ``group`` [n_F] int (families left out are not scored).

        Significance (DESIGN.md §2c, :mod:`hnd_jax.scoring.significance`): ``auc``/``auc_pvalues``
        [U, C] f32 and ``paired_significant`` [U, C] bool (``paired``, BH-significant over all tested
        (u, c) at ``config.alpha``, and AUC > 0.5); per family ``global_pvalues_F`` [U, G] f32 from
        ``config.permutations`` permutations seeded ``[config.seed, position of F in the taxonomy]``,
        ``global_effect_F`` [U, G] f32 and ``biased_significant_F`` [U, G] bool (``biased_F`` and
        BH-significant over all (u, g) of every scored family of the layer together).

        Extras: ``lo``/``hi`` [U], ``paired`` [U, C], ``intersection``/``union`` [U, C] int64,
        ``top_images`` [U, 4] int64, ``global_lo_F``/``global_hi_F`` [U], and ``image_max`` [N, U]
        when it has at most ``IMAGE_MAX_STORE_LIMIT`` values.
        """
        tax = self.taxonomy
        cfg = self.config
        inter = np.asarray(pass2_result["intersection"], np.int64)
        union = np.asarray(pass2_result["union"], np.int64)
        shape = (self.num_units, tax.num_concepts)
        if inter.shape != shape or union.shape != shape:
            raise ValueError(f"tally counts {inter.shape}/{union.shape}: expected {shape}")
        iou = iou_from_counts(inter, union, np.float64)  # exact ratios for every decision
        top, localizable, region = top_concepts(iou, tax.concept_region_index, tax.regions, cfg.iou_threshold)
        region_pos = {r: i for i, r in enumerate(tax.regions)}
        unit_region_index = np.array([region_pos.get(r, -1) for r in region.tolist()], np.int64)
        image_max = np.asarray(pass1_result["image_max"], np.float32)
        lo = np.asarray(pass1_result["lo"], np.float32)
        hi = np.asarray(pass1_result["hi"], np.float32)
        probs, paired = local_probabilities(
            iou, image_max, lo, hi, self.labelled, tax.region_members, unit_region_index, cfg.pair_factor
        )
        out: dict[str, np.ndarray] = {
            "concepts": np.asarray(tax.concept_names, dtype=str),
            "concept_region": np.asarray(tax.concept_regions, dtype=str),
            "concept_type": np.asarray(tax.concept_types, dtype=str),
            "thresholds": np.asarray(pass1_result["thresholds"], np.float32),
            "iou": iou.astype(np.float32),
            "top_concept": top,
            "localizable": localizable,
            "region": region,
            "local_probs": probs,
            "paired": paired,
            "lo": lo,
            "hi": hi,
            "intersection": inter,
            "union": union,
            "top_images": top_images(image_max, TOP_IMAGES) if tops is None else np.asarray(tops, np.int64),
        }
        auc, auc_p, tested = auc_test(image_max, self.labelled, self.family, tax.concept_family_index)
        _, auc_sig = benjamini_hochberg(auc_p, cfg.alpha, tested)
        out["auc"] = auc.astype(np.float32)
        out["auc_pvalues"] = auc_p.astype(np.float32)
        out["paired_significant"] = paired & auc_sig & (auc > 0.5)
        if image_max.size <= IMAGE_MAX_STORE_LIMIT:
            out["image_max"] = image_max
        family_pos = {f.name: i for i, f in enumerate(tax.global_families)}
        global_p: dict[str, np.ndarray] = {}
        for name, res in (global_results or {}).items():
            fam = tax.global_family(name)
            group = np.asarray(res["group"])
            gmax = np.asarray(res["image_max"], np.float32)
            if gmax.shape != (group.shape[0], self.num_units):
                raise ValueError(f"global family {name}: image_max {gmax.shape} vs {group.shape[0]} images")
            if group.size and (group.min() < 0 or group.max() >= fam.num_groups):
                raise HndError(f"global family {name}: group indices must lie in 0..{fam.num_groups - 1}")
            p64, biased = global_probabilities(
                gmax, group, fam.num_groups, res["lo"], res["hi"], self.bias_cutoff(name), dtype=np.float64
            )
            gp = p64.astype(np.float32)
            pvalues, effect = global_permutation_test(
                gmax, group, fam.num_groups, res["lo"], res["hi"], p64, cfg.permutations, [cfg.seed, family_pos[name]],
                mesh=self.mesh,
            )
            global_p[name] = pvalues
            out[f"global_pvalues_{name}"] = pvalues.astype(np.float32)
            out[f"global_effect_{name}"] = effect.astype(np.float32)
            out[f"global_groups_{name}"] = np.asarray(fam.groups, dtype=str)
            out[f"global_probs_{name}"] = gp
            out[f"biased_{name}"] = biased
            out[f"global_lo_{name}"] = np.asarray(res["lo"], np.float32)
            out[f"global_hi_{name}"] = np.asarray(res["hi"], np.float32)
        if global_p:  # one BH over every (u, g) of the layer's families (DESIGN.md §2c)
            names = list(global_p)
            _, sig = benjamini_hochberg(np.concatenate([global_p[f].ravel() for f in names]), cfg.alpha)
            start = 0
            for f in names:
                size = global_p[f].size
                out[f"biased_significant_{f}"] = out[f"biased_{f}"] & sig[start : start + size].reshape(global_p[f].shape)
                start += size
        return out
