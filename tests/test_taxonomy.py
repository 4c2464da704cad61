"""The taxonomy is data: the default matches DESIGN.md §1 and user files are validated."""

import json

import numpy as np
import pytest

from hnd_jax.errors import HndError
from hnd_jax.taxonomy import default_taxonomy, load_taxonomy, taxonomy_from_dict

REGIONS = {
    "Eye": "AU_1 AU_2 AU_4 AU_5 left_brow right_brow left_eye right_eye Arched_Eyebrows Bushy_Eyebrows Eyeglasses Narrow_Eyes",
    "Cheek": "AU_6 left_cheek right_cheek Bags_Under_Eyes High_Cheekbones Rosy_Cheeks No_Beard 5_o_Clock_Shadow",
    "Nose": "AU_9 nose Big_Nose Pointy_Nose",
    "Mouth": "AU_12 AU_15 AU_20 AU_25 mouth Big_Lips Mouth_Slightly_Open Mustache Smiling Wearing_Lipstick",
    "Chin": "AU_17 AU_26 Double_Chin Goatee",
}


def test_default_taxonomy_matches_design():
    tax = default_taxonomy()
    assert tax.num_concepts == 38
    for region, names in REGIONS.items():
        assert sorted(tax.concepts[i].name for i in tax.concepts_in_region(region)) == sorted(names.split())
    types = {t: int((tax.concept_types == t).sum()) for t in tax.concept_types_order}
    assert types == {"attribute": 18, "action_unit": 12, "part": 8}
    assert [f.index_file for f in tax.local_families] == ["Attributes.csv", "Action_Units.csv", "Parts.csv"]
    assert {g.name: g.groups for g in tax.global_families}["Age"] == (
        "zero_to_twenty", "twenty_to_forty", "forty_to_sixty", "sixty_plus")
    cut = {g.name: g.bias_cutoff for g in tax.global_families}
    assert cut == {"Age": 0.3, "Gender": 0.55, "Ethnicity": 0.3, "skin_tone": 0.55}
    assert tax.region_members.sum() == 38 and np.all(tax.region_members.sum(0) == 1)


def test_exact_names_not_prefixes():
    tax = default_taxonomy()
    assert tax.concept_index["AU_1"] != tax.concept_index["AU_12"]
    assert "AU_" not in tax.concept_index


def test_user_taxonomy_roundtrip_and_other_sizes(tmp_path):
    data = {
        "name": "mine",
        "regions": ["Top", "Bottom"],
        "local_families": [{"name": "f", "index_file": "F.csv", "type": "blob", "concepts": {"a": "Top", "b": "Bottom"}}],
        "global_families": [{"name": "Colour", "groups": ["r", "g", "b"]}],
    }
    path = tmp_path / "tax.json"
    path.write_text(json.dumps(data))
    tax = load_taxonomy(path)
    assert tax.concept_names == ("a", "b")
    assert tax.global_families[0].bias_cutoff == pytest.approx(0.4)  # 1.2 / G for G = 3
    assert taxonomy_from_dict(tax.to_dict()).fingerprint == tax.fingerprint


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda d: d["local_families"][0]["concepts"].update(c="Nowhere"), "unknown region"),
        (lambda d: d["local_families"].append(dict(d["local_families"][0], name="g", index_file="G.csv")), "listed twice"),
        (lambda d: d.pop("regions"), "missing key"),
        (lambda d: d["global_families"].append({"name": "X", "groups": ["only"]}), "two distinct groups"),
    ],
)
def test_bad_taxonomy_is_one_line_error(tmp_path, mutate, needle):
    data = {
        "regions": ["Top"],
        "local_families": [{"name": "f", "index_file": "F.csv", "type": "t", "concepts": {"a": "Top"}}],
        "global_families": [],
    }
    mutate(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(HndError) as info:
        load_taxonomy(path)
    assert needle in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_taxonomy_file_not_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{nope")
    with pytest.raises(HndError, match="not valid JSON"):
        load_taxonomy(path)
