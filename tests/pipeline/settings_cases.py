"""Out-of-range settings of ``hnd dissect`` and the start of the one line each must give (exit 2).

Shared by the test that a finished OUT stays unchanged (test_outputs.py) and the test that a new OUT
is not even created (test_out_safety.py): the settings are checked before anything is written.
"""

SETTINGS_OUT_OF_RANGE = [
    ("--iou-threshold", "-1", "--iou-threshold -1.0: expected a finite number >= 0 and <= 1"),
    ("--iou-threshold", "inf", "--iou-threshold inf"),
    ("--pair-factor", "nan", "--pair-factor nan"),
    ("--quantile", "1", "--quantile 1.0"),
    ("--alpha", "0", "--alpha 0.0"),
    ("--permutations", "0", "--permutations 0"),
    ("--permutation-seed", "-1", "--permutation-seed -1"),
    ("--batch-size", "0", "--batch-size 0"),
    ("--checkpoint-every", "-2", "--checkpoint-every -2"),
    ("--cache-budget", "lots", "--cache-budget 'lots'"),
]
