"""Cost of the §2c significance tests per layer (DESIGN.md §2c): the permutation test of every global
family and the AUC test of every local concept, on random data of a realistic shape.

    python benchmarks/significance_cost.py [--units 512] [--local 2000] [--global-images 500] [--permutations 1000]

Prints seconds per layer (first call includes jit compilation; the second is steady state) and, with
``--json FILE``, writes them with the shape and the machine (:func:`hnd_jax.demo.machine.measured_on`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from hnd_jax.scoring.hierarchy import global_probabilities
from hnd_jax.scoring.significance import auc_test, benjamini_hochberg, global_permutation_test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=512)
    ap.add_argument("--local", type=int, default=2000, help="local-dictionary images")
    ap.add_argument("--global-images", type=int, default=500, help="images per global family")
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--json", metavar="FILE", type=Path, default=None, help="also write the timings as JSON")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    U = a.units
    families = [4, 2, 4, 2]  # Age, Gender, Ethnicity, skin_tone
    gdata = []
    for G in families:
        m = rng.normal(size=(a.global_images, U)).astype(np.float32)
        group = rng.integers(0, G, a.global_images)
        gdata.append((m, group, G))
    # local: 3 families (attributes 18, action units 12, parts 8 concepts), images split 50/25/25
    fam_sizes = [a.local // 2, a.local // 4, a.local - a.local // 2 - a.local // 4]
    image_family = np.repeat([0, 1, 2], fam_sizes)
    concept_family = np.repeat([0, 1, 2], [18, 12, 8])
    labelled = (rng.random((a.local, 38)) < 0.3) & (image_family[:, None] == concept_family[None, :])
    lm = rng.normal(size=(a.local, U)).astype(np.float32)
    runs = []
    for run in ("first (with compilation)", "second"):
        t0 = time.perf_counter()
        ps = []
        for k, (m, group, G) in enumerate(gdata):
            lo, hi = m.min(0), m.max(0)
            obs, _ = global_probabilities(m, group, G, lo, hi, 0.5, dtype=np.float64)
            p, _ = global_permutation_test(m, group, G, lo, hi, obs, a.permutations, [0, k])
            ps.append(p.ravel())
        benjamini_hochberg(np.concatenate(ps), 0.05)
        t1 = time.perf_counter()
        auc, p, tested = auc_test(lm, labelled, image_family, concept_family)
        benjamini_hochberg(p, 0.05, tested)
        t2 = time.perf_counter()
        print(f"{run}: permutation test ({a.permutations} perms, 4 families x {a.global_images} images, U={U}): "
              f"{t1 - t0:.2f} s; AUC test ({a.local} local images, 38 concepts): {t2 - t1:.2f} s")
        runs.append({"run": run, "permutation_s": t1 - t0, "auc_s": t2 - t1})
    if a.json:
        from hnd_jax.atomic import write_json
        from hnd_jax.demo.machine import measured_on

        write_json(a.json, {"benchmark": "significance_cost", "units": U, "local_images": a.local,
                            "global_images_per_family": a.global_images, "global_groups": families,
                            "local_concepts": 38, "permutations": a.permutations, "runs": runs,
                            "machine": measured_on()})


if __name__ == "__main__":
    main()
