"""`hnd layers` marks a layer whose activation map is empty at the analysis size (0 units or 0 x 0
pixels) with the reason `hnd dissect` refuses it, in the same words; every other layer is listed as
dissectable, and a large head is listed without allocating its parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hnd_jax.cli.main import main
from hnd_jax.models.capture import nothing_to_dissect


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_empty_maps_are_marked_with_dissects_reason(capsys, size):
    code, stdout, err = _run(capsys, "layers", "--model", "demo_cnn", "--image-size", size, "--json")
    assert code == 0, err
    rows = json.loads(stdout)
    empty = {r["name"] for r in rows if r["channels"] * r["height"] * r["width"] == 0}  # independent of the code
    assert {r["name"] for r in rows if not r["dissectable"]} == empty
    assert (size < 8) == bool(empty)  # demo_cnn halves the map 4 times: 8 px is the least for conv4 (1 x 1)
    for r in rows:
        want = (f"its activation map is {r['channels']} x {r['height']} x {r['width']} at --image-size {size}: "
                "nothing to dissect (a larger --image-size, or an earlier layer)")
        assert r.get("reason") == (want if r["name"] in empty else None)

    code, text, err = _run(capsys, "layers", "--model", "demo_cnn", "--image-size", size)
    assert code == 0, err
    lines = text.splitlines()
    assert lines[0].endswith(f"{len(rows) - len(empty)} dissectable layers" + (f" of {len(rows)}" if empty else "")
                             + " (* = card default)"), lines[0]
    for r in rows:
        (line,) = [l for l in lines[2:] if l[2:].split(" ")[0] == r["name"]]
        assert line.endswith("nothing to dissect") == (r["name"] in empty), line
    if empty:
        first = next(r for r in rows if r["name"] in empty)
        assert lines[-1].endswith(f"e.g. {first['name']}: {first['reason']}")
    else:
        assert "nothing to dissect" not in text


def test_the_listing_agrees_with_hnd_dissect(capsys, tmp_path, monkeypatch):
    """At 4 px conv4 (128 x 0 x 0) is refused by hnd dissect with the listing's reason; relu3 (64 x 1 x 1),
    listed as dissectable, is dissected."""
    monkeypatch.setenv("HND_CACHE", str(tmp_path / "cache"))
    _, stdout, _ = _run(capsys, "layers", "--model", "demo_cnn", "--image-size", 4, "--json")
    rows = {r["name"]: r for r in json.loads(stdout)}
    assert not rows["conv4"]["dissectable"] and rows["relu3"]["dissectable"]
    common = ["dissect", "--model", "demo_cnn", "--random-init", "--image-size", 4, "--dictionary", "synthetic:6:0",
              "--no-report", "--no-progress"]
    code, _, err = _run(capsys, *common, "--layer", "conv4", "--out", tmp_path / "refused")
    assert code == 2 and err == f"hnd: error: layer conv4: {rows['conv4']['reason']}\n", err
    code, _, err = _run(capsys, *common, "--layer", "relu3", "--out", tmp_path / "done")
    assert code == 0, err
    assert (tmp_path / "done" / "relu3" / "scores.npz").is_file()


@pytest.mark.parametrize("shape", [(0, 0, 16), (3, 0, 16), (0, 3, 16), (2, 2, 0), (0, 0, 0)])
def test_zero_units_or_pixels_is_nothing_to_dissect(shape):
    h, w, c = shape
    assert nothing_to_dissect(shape, 7) == (f"its activation map is {c} x {h} x {w} at --image-size 7: nothing to "
                                            "dissect (a larger --image-size, or an earlier layer)")
    assert nothing_to_dissect((1, 1, 1), 7) is None and nothing_to_dissect((7, 5, 3), 7) is None


def _peak_rss_kib(tmp_path, *argv) -> tuple[int, str]:
    """Run `python -m hnd_jax.cli.main ARGV` in a child; its peak resident memory (KiB, Linux) and stdout."""
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as o, err.open("w") as e:
        proc = subprocess.Popen([sys.executable, "-m", "hnd_jax.cli.main", *map(str, argv)], stdout=o, stderr=e)
        _, status, usage = os.wait4(proc.pid, 0)  # reaped here, not by Popen, to read the child's own usage
        proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, err.read_text()
    return usage.ru_maxrss, out.read_text()


def test_a_large_head_is_listed_without_allocating_it(tmp_path):
    """resnet18 with a 400,000-class fc head (205 M parameters, 820 MB): hnd layers once allocated them
    only to list shapes (a --num-outputs 1000000000 card ran out of memory here)."""
    cards = {}
    for n in (10, 400_000):
        cards[n] = tmp_path / f"head{n}.toml"
        assert main(["card", "new", "--arch", "resnet18", "--num-outputs", str(n), "--out", str(cards[n])]) == 0
    small, small_out = _peak_rss_kib(tmp_path, "layers", "--model", cards[10])
    big, big_out = _peak_rss_kib(tmp_path, "layers", "--model", cards[400_000])
    assert small_out.splitlines()[1:] == big_out.splitlines()[1:] and "512 x 7 x 7" in big_out
    assert big - small < 300 * 1024, (f"peak memory {small / 1024:.0f} MiB with a 10-output head, "
                                      f"{big / 1024:.0f} MiB with 400,000")
