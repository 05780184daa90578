"""The superclass study on score sets of hand-made logits, and notebook 02 on real data."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from conftest import needs_fashion_mnist, run_tiny_notebook

from mrl_analysis.cache.scores import ScoreSet
from mrl_analysis.data import wordnet
from mrl_analysis.superclass.study import (
    SECTIONS,
    TrendRule,
    overview,
    per_class_tables,
    superclass_map_for,
    superclass_study,
    superclass_tables,
)

C = 4
CLASS_IDS = ["cat", "dog", "car", "bus"]
HIERARCHY = {"cat": "animal", "dog": "animal", "car": "vehicle", "bus": "vehicle"}
LABELS = np.array([0, 1, 2, 3, 0, 2])
# Predicted classes per size and sample; the logits put 3 on the prediction, 1 elsewhere.
MRL_PREDS = np.array(
    [
        [1, 1, 3, 0, 0, 2],  # size 2: right on 1, 4, 5
        [0, 1, 2, 2, 2, 3],  # size 8: right on 0, 1, 2
        [0, 1, 2, 3, 1, 1],  # size 32: right on 0..3
    ]
)
FF_PREDS = np.array([[0, 0, 0, 0, 0, 0], [1, 1, 2, 0, 0, 0]])  # FF-2, FF-8


def _set(name: str, kind: str, preds: np.ndarray, nesting: list[int]) -> ScoreSet:
    return ScoreSet(
        name=name,
        kind=kind,
        logits=(1 + 2 * np.eye(C, dtype=np.float32)[preds]).astype(np.float32),
        labels=LABELS,
        nesting=nesting,
        class_names=[c.title() for c in CLASS_IDS],
        class_ids=CLASS_IDS,
        hierarchy=HIERARCHY,
        sources=(name,) if kind != "ff" else ("FF-2", "FF-8"),
    )


@pytest.fixture(scope="module")
def sets() -> dict[str, ScoreSet]:
    return {
        "FF": _set("FF", "ff", FF_PREDS, [2, 8]),
        "MRL": _set("MRL", "mrl", MRL_PREDS, [2, 8, 32]),
    }


def test_overview_lists_each_set(sets):
    table = overview(sets)
    assert table["model"].tolist() == ["FF", "MRL"]
    assert table["sizes"].tolist() == [[2, 8], [2, 8, 32]]
    assert table["from"].tolist() == ["FF-2, FF-8", "MRL"]


def test_superclass_map_sources(tmp_path, sets):
    mrl = sets["MRL"]
    smap = superclass_map_for(mrl)
    assert smap.names == ["animal", "vehicle"] and smap.reject is None
    # A user file may name classes by display name; a third group splits the vehicles.
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"Cat": "pet", "Dog": "pet", "Car": "road", "Bus": "transit"}))
    smap = superclass_map_for(mrl, path)
    assert smap.names == ["pet", "road", "transit"]
    np.testing.assert_array_equal(smap.index, [0, 0, 1, 2])
    # reject="auto": a class the source leaves out goes to the "other" group.
    partial = superclass_map_for(mrl, {"Cat": "pet", "Dog": "pet"})
    assert partial.names == ["pet", "other"] and partial.reject == "other"
    np.testing.assert_array_equal(partial.index, [0, 0, 1, 1])
    with pytest.raises(ValueError, match="reject="):
        superclass_map_for(mrl, {"Cat": "pet", "Dog": "pet"}, reject=None)
    with pytest.raises(ValueError, match="not hierarchy and wordnet_depth"):
        superclass_map_for(mrl, path, wordnet_depth=2)
    with pytest.raises(ValueError, match="WordNet ids"):
        superclass_map_for(mrl, wordnet_depth=2)
    with pytest.raises(ValueError, match="stores no class hierarchy"):
        superclass_map_for(replace(mrl, hierarchy=None))
    with pytest.raises(ValueError, match="none of the classes"):
        superclass_map_for(mrl, {"zebra": "animal"})


def test_superclass_map_from_wordnet_depth(sets):
    wnids = [w for w, _ in wordnet.imagenet1k_classes()[::250]]
    s = replace(sets["MRL"], class_ids=wnids, class_names=wnids, hierarchy=None)
    smap = superclass_map_for(s, wordnet_depth=4)
    expected = wordnet.superclass_map(wnids, depth=4)
    assert [smap.names[i] for i in smap.index] == [expected[w] for w in wnids]


def test_superclass_map_from_chosen_wordnet_synsets(sets):
    # tench (a fish), goldfish, a bird (cock), a car (sports car): fish and bird chosen.
    wnids = ["n01440764", "n01443537", "n01514668", "n04285008"]
    s = replace(sets["MRL"], class_ids=wnids, class_names=wnids, hierarchy=None)
    for reject in ("other", "auto"):  # "auto" pools the rest under "other" too
        smap = superclass_map_for(s, wordnet_superclasses=["n02512053", "n01503061"], reject=reject)
        names = [smap.names[i] for i in smap.index]
        assert names[:2] == [names[0]] * 2 and names[0].startswith("fish")
        assert names[2].startswith("bird") and names[3] == "other"
    with pytest.raises(ValueError, match="descend"):
        superclass_map_for(s, wordnet_superclasses=["n02512053"], reject=None)


def test_superclass_tables_cover_every_model(sets):
    overall, per_super = superclass_tables(sets, superclass_map_for(sets["MRL"]))
    assert set(overall["model"]) == {"MRL", "FF"}
    ff8 = overall[(overall.model == "FF") & (overall.truncate_dim == 8)].iloc[0]
    # FF-8 predicts [1,1,2,0,0,0] for labels [0,1,2,3,0,2]: right on 1, 2, 4;
    # superclass right on 0 (dog~cat), 1, 2, 4; errors 0, 3, 5: only 0 stays in animal.
    assert ff8["fine_accuracy"] == pytest.approx(3 / 6)
    assert ff8["superclass_accuracy"] == pytest.approx(4 / 6)
    assert ff8["within_superclass_error_share"] == pytest.approx(1 / 3)
    assert set(per_super["superclass"]) == {"animal", "vehicle"}


def test_per_class_tables(sets):
    per_class = per_class_tables(sets)
    cat = per_class[(per_class.model == "MRL") & (per_class.class_name == "Cat")]
    # Cat samples 0 and 4: right at size 2 on sample 4, at 8 on sample 0, at 32 on sample 0.
    assert cat["n_correct"].tolist() == [1, 1, 1]
    assert set(per_class["model"]) == {"MRL", "FF"}


def test_superclass_study_gathers_tables_and_headlines(sets, capsys):
    smap = superclass_map_for(sets["MRL"])
    study = superclass_study(sets, smap, trend=TrendRule(tolerance=0, dip=1), n_outliers=1)
    assert study.baseline == "FF" and study.multi_class_superclasses() == ["animal", "vehicle"]
    assert set(study.per_superclass["model"]) == {"MRL"}
    assert set(study.model_classes["model"]) == {"MRL"}
    assert set(study.baseline_classes["model"]) == {"FF"}
    # Trends of MRL, of MRL at FF's sizes (2, 8) and of FF.
    assert set(study.trends["model"]) == {"MRL", "MRL @ FF sizes", "FF"}
    assert set(study.headlines["section"]) == set(SECTIONS)
    paired = study.headlines[study.headlines.section == "paired"]
    # MRL - FF fine accuracy at 8: 3/6 - 3/6; at 2: 3/6 - 2/6 (FF-2 right on 0 and 4).
    fine = paired[paired.metric == "fine_accuracy"].set_index("truncate_dim")["value"]
    assert fine.to_dict() == pytest.approx({2: 1 / 6, 8: 0.0})
    study.say("accuracy")
    printed = capsys.readouterr().out.splitlines()
    # Size 2 predicts [1, 1, 3, 0, 0, 2] for [0, 1, 2, 3, 0, 2]: only sample 3 leaves its
    # superclass.
    # With its bootstrap interval over the 6 samples (one miss: 50-100%).
    assert printed[0] == "MRL at 2 dims: superclass accuracy 83.3% (95% interval 50.0–100.0%)"
    assert len(printed) == 6
    with pytest.raises(ValueError, match="unknown headline section"):
        study.say("nope")


def test_superclass_study_without_ff(sets, capsys):
    mrl_only = {"MRL": sets["MRL"]}
    study = superclass_study(mrl_only, superclass_map_for(sets["MRL"]))
    assert study.baseline is None and study.baseline_classes is None
    assert set(study.trends["model"]) == {"MRL"}
    assert "paired" not in set(study.headlines["section"])
    study.say("paired")  # nothing to say without a baseline
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="no score set named 'FF'"):
        superclass_study(mrl_only, superclass_map_for(sets["MRL"]), model="FF")
    with pytest.raises(ValueError, match="fraction"):
        superclass_study(mrl_only, superclass_map_for(sets["MRL"]), tolerance=1.0001)


@needs_fashion_mnist
@pytest.mark.integration
def test_notebook_02_runs_on_real_caches(tiny_fmnist_models, tmp_path):
    figures = run_tiny_notebook(
        tiny_fmnist_models, tmp_path, "notebooks/02_superclass_trends.ipynb"
    )
    for name in ("superclass_accuracy", "per_class_accuracy", "trend_counts", "relative_accuracy"):
        assert (figures / f"{name}.png").stat().st_size > 10_000
    overall = pd.read_csv(figures / "superclass_accuracy.csv")
    assert set(overall["model"]) == {"MRL", "MRL-E", "FF"}
    # A superclass prediction is right whenever the fine one is.
    assert (overall["superclass_accuracy"] >= overall["fine_accuracy"]).all()
    assert overall["superclass_accuracy"].between(0, 1).all()
