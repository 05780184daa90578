"""Cache-level glue of the routing studies, on caches of hand-made logits."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from mrl_analysis.cache.build import embed_dataset
from mrl_analysis.cache.experiment import build_caches, build_flipped_caches
from mrl_analysis.cache.scores import ScoreSet, score_sets, stack_ff
from mrl_analysis.data.registry import get_dataset
from mrl_analysis.models.checkpoints import load_model, save_checkpoint
from mrl_analysis.models.network import build_model
from mrl_analysis.routing.cascade import (
    SplitSettings,
    best_cap,
    cascade_summary,
    lowest_thresholds,
)
from mrl_analysis.routing.plots import tradeoff_figure, zoom_tradeoff
from mrl_analysis.routing.router import router_study
from mrl_analysis.routing.study import (
    accuracy_tables,
    cascade_analysis,
    cascade_name,
    cascade_studies,
    eval_score_sets,
    flipped_split,
    oracle_tables,
    router_analysis,
    score_set_overview,
    score_set_router,
)
from mrl_analysis.routing.tradeoff import tradeoff_points

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
FF_PREDS = {8: np.array([1, 1, 2, 0, 0, 0]), 2: np.array([0, 0, 0, 0, 0, 0])}


def _logits(preds: np.ndarray) -> np.ndarray:
    return (1 + 2 * np.eye(C, dtype=np.float32)[preds]).astype(np.float32)


class _LookupHead(nn.Module):
    """Returns the hand-made logits of the samples whose index is feature 0."""

    def __init__(self, logits: np.ndarray):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(logits))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.table[:, features[:, 0].round().long()]


class LookupModel(nn.Module):
    """The model contract (nesting, kind, embed, fc) over a table of logits."""

    def __init__(self, logits: np.ndarray, nesting: list[int], kind: str):
        super().__init__()
        self.nesting, self.kind, self.meta, self.config = nesting, kind, {}, {}
        self.fc = _LookupHead(logits)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x


class IndexSet(Dataset):
    def __init__(self, labels: np.ndarray):
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return torch.tensor([float(i), 0.0, 1.0]), int(self.labels[i])


@dataclass
class Bundle:
    dataset: Dataset
    targets: np.ndarray
    fingerprint: str
    class_names: list[str]
    class_ids: list[str]
    hierarchy: dict[str, str] | None
    split: str = "test"
    transform: object = None


def _bundle(labels=LABELS, hierarchy=HIERARCHY) -> Bundle:
    return Bundle(
        dataset=IndexSet(labels),
        targets=labels,
        fingerprint=f"hand-{labels.tolist()}",
        class_names=[c.title() for c in CLASS_IDS],
        class_ids=CLASS_IDS,
        hierarchy=hierarchy,
    )


def _cache(tmp: Path, name: str, preds: np.ndarray, nesting, kind, bundle=None):
    model = LookupModel(_logits(preds), list(nesting), kind)
    return embed_dataset(model, bundle or _bundle(), tmp / name, batch_size=4, progress=False)


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("caches")
    return {
        "FF-8": _cache(tmp, "ff8", FF_PREDS[8][None], [8], "ff"),
        "MRL": _cache(tmp, "mrl", MRL_PREDS, [2, 8, 32], "mrl"),
        "FF-2": _cache(tmp, "ff2", FF_PREDS[2][None], [2], "ff"),
    }


@pytest.fixture(scope="module")
def sets(caches):
    return score_sets(caches)


def test_score_sets_stack_ff_models_by_size(caches, sets):
    assert list(sets) == ["FF", "MRL"]  # FF takes the place of the first FF model
    ff = sets["FF"]
    assert ff.kind == "ff" and ff.nesting == [2, 8] and ff.sources == ("FF-2", "FF-8")
    np.testing.assert_array_equal(ff.predictions(), np.stack([FF_PREDS[2], FF_PREDS[8]]))
    np.testing.assert_array_equal(sets["MRL"].predictions(), MRL_PREDS)
    np.testing.assert_array_equal(ff.labels, LABELS)
    probs = ff.probabilities()
    np.testing.assert_allclose(probs.sum(axis=2), 1, rtol=1e-6)
    np.testing.assert_array_equal(probs.argmax(axis=2), ff.predictions())


def test_stacking_refuses_mixed_splits_and_repeated_sizes(tmp_path, caches):
    other = _cache(tmp_path, "other", FF_PREDS[2][None], [4], "ff", _bundle(LABELS[::-1].copy()))
    with pytest.raises(ValueError, match="same eval split"):
        score_sets({**caches, "FF-4": other})
    twin = _cache(tmp_path, "twin", FF_PREDS[8][None], [8], "ff")
    with pytest.raises(ValueError, match="share size"):
        stack_ff({"FF-8": caches["FF-8"], "FF-8b": twin})
    with pytest.raises(ValueError, match="FF-k caches only"):
        stack_ff({"MRL": caches["MRL"]})
    with pytest.raises(ValueError, match="non-FF model is named"):
        score_sets({"FF": caches["MRL"], "FF-2": caches["FF-2"]})


def test_accuracy_tables(sets):
    acc = accuracy_tables(sets)
    assert acc[acc.model == "MRL"]["accuracy"].tolist() == pytest.approx([3 / 6, 3 / 6, 4 / 6])
    # FF-2 right on 0, 4; FF-8 on 1, 2, 4.
    assert acc[acc.model == "FF"]["accuracy"].tolist() == pytest.approx([2 / 6, 3 / 6])


def test_oracle_tables_per_eval_set(sets):
    flipped = {n: replace(s, logits=s.logits[::-1].copy()) for n, s in sets.items()}
    summary, shares = oracle_tables({"test": sets, "test-flip": flipped})
    assert len(summary) == 4 and set(summary["eval_set"]) == {"test", "test-flip"}
    row = summary.set_index(["eval_set", "model"]).loc[("test", "MRL")]
    # Any size right: samples 0..5 all (sample 3 at 32, sample 5 at 2).
    assert row["oracle_accuracy"] == pytest.approx(1.0)
    assert row["best_accuracy"] == pytest.approx(4 / 6)
    ff = summary.set_index(["eval_set", "model"]).loc[("test", "FF")]
    # FF-2 right on 0, 4; FF-8 on 1, 2, 4: the oracle over FF models gets 4 of 6.
    assert ff["oracle_accuracy"] == pytest.approx(4 / 6)
    mrl_shares = shares[(shares.model == "MRL") & (shares.eval_set == "test")]
    assert mrl_shares["share"].tolist() == pytest.approx([3 / 6, 2 / 6, 1 / 6, 0])
    # The same predictions in reverse size order route differently.
    flip_shares = shares[(shares.model == "MRL") & (shares.eval_set == "test-flip")]
    assert flip_shares["share"].tolist() == pytest.approx([4 / 6, 0, 2 / 6, 0])


def _random_set(kind="mrl", g=4, n=300, seed=0, name="MRL") -> ScoreSet:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, n)
    logits = rng.normal(size=(g, n, C)).astype(np.float32)
    logits[:, np.arange(n), labels] += np.linspace(0.2, 2.0, g)[:, None]
    return ScoreSet(
        name=name,
        kind=kind,
        logits=logits,
        labels=labels,
        nesting=[2**i for i in range(1, g + 1)],
        class_names=CLASS_IDS,
        class_ids=CLASS_IDS,
        hierarchy=HIERARCHY,
        sources=(name,),
    )


def test_cascade_studies_with_and_without_tta():
    sets = {"MRL": _random_set(), "MRL-E": _random_set("mrl-e", name="MRL-E")}
    same = cascade_studies(sets, sets, SplitSettings(n_splits=3))
    assert list(same) == ["MRL-AC", "MRL-AC + flip TTA", "MRL-E-AC", "MRL-E-AC + flip TTA"]
    # Averaging with identical "flipped" probabilities changes nothing.
    pd.testing.assert_frame_equal(
        same["MRL-AC"].results, same["MRL-AC + flip TTA"].results, check_exact=False
    )
    other = {n: _random_set(s.kind, seed=1, name=n) for n, s in sets.items()}
    other = {n: replace(s, labels=sets[n].labels) for n, s in other.items()}
    tta = cascade_studies(sets, other, SplitSettings(n_splits=3))
    assert not np.allclose(
        tta["MRL-AC"].results["accuracy"], tta["MRL-AC + flip TTA"].results["accuracy"]
    )
    summary = cascade_summary(same)
    assert set(summary["model"]) == set(same) and len(summary) == 4 * 3
    mrl_e = summary[summary.model == "MRL-E-AC"]
    # MRL-E's shared head extends the logits: its cost is the final size, not the sum.
    np.testing.assert_allclose(mrl_e["expected_head_macs_mean"], C * mrl_e["expected_size_mean"])
    with pytest.raises(ValueError, match="tta_sets has no"):
        cascade_studies(sets, {"MRL": sets["MRL"]}, SplitSettings(n_splits=2))
    with pytest.raises(ValueError, match="no MRL or MRL-E"):
        cascade_studies({"FF": _random_set("ff", name="FF")})


def test_best_cap_prefers_the_smallest_on_ties():
    summary = pd.DataFrame(
        {
            "model": ["a", "a", "a", "b"],
            "max_size": [4, 2, 8, 2],
            "accuracy_mean": [0.9, 0.8, 0.9, 0.5],
        }
    )
    assert best_cap(summary).set_index("model")["max_size"].to_dict() == {"a": 4, "b": 2}


def test_tradeoff_points_carry_every_cost():
    s = _random_set()
    sets = {"MRL": s, "FF": replace(_random_set("ff", seed=2, name="FF"), labels=s.labels)}
    studies = cascade_studies({"MRL": s}, settings=SplitSettings(n_splits=3))
    oracle, _ = oracle_tables({"test": {"MRL": s}})
    two = SplitSettings(n_splits=2)
    router = router_study(s.probabilities(), s.labels, s.nesting, settings=two, cost_weights=[0, 1])
    points = tradeoff_points(
        studies=studies,
        single_sizes=accuracy_tables(sets),
        oracle=oracle,
        routers=[router],
        num_classes=C,
    )
    assert set(points["method"]) == {"MRL-AC", "MRL", "FF", "oracle", "router"}
    single = points[points.method == "FF"]
    np.testing.assert_allclose(single["expected_head_macs"], C * single["expected_size"])
    cascade = points[points.method == "MRL-AC"]
    np.testing.assert_allclose(
        cascade["expected_head_macs"], C * cascade["expected_cumulative_size"]
    )
    assert cascade["expected_cumulative_size_std"].notna().all()
    routed = points[points.method == "router"]
    np.testing.assert_allclose(routed["expected_head_macs"], C * routed["expected_cumulative_size"])
    assert points.loc[points.method == "oracle", "expected_head_macs"].isna().all()
    for x in ("expected_size", "expected_cumulative_size", "expected_head_macs"):
        assert len(tradeoff_figure(points, x=x).data) == 5
    # Multiply-adds: one tick per power of ten (1k, 10k), not plotly's "2 5" in between.
    macs = tradeoff_figure(points, x="expected_head_macs").layout.xaxis
    assert (macs.type, macs.dtick, macs.tickformat) == ("log", 1, "~s")
    with pytest.raises(ValueError, match="nothing to plot"):
        tradeoff_points(num_classes=C)


def test_flipped_caches_embed_flipped_images(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "data" / "test" / cls).mkdir(parents=True)
        for i in range(2):
            pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / "test" / cls / f"{i}.png")
    torch.manual_seed(0)
    model = build_model("resnet18", 2, "mrl", [2, 512], in_channels=3)
    ckpt = save_checkpoint(tmp_path / "m.pt", model, class_names=["a", "b"])
    common = {"cache_root": tmp_path / "cache", "data_root": tmp_path / "data", "progress": False}
    flipped = build_flipped_caches({"M": ckpt}, "folder", ["test"], **common)["M"]["test-hflip"]
    plain = build_caches({"M": ckpt}, "folder", ["test"], **common)["M"]["test"]
    assert flipped.path == tmp_path / "cache" / "M" / "folder-test-hflip"
    assert "RandomHorizontalFlip(p=1.0)" in flipped.manifest["dataset"]["transform"]
    bundle = get_dataset("folder", "test", root=tmp_path / "data")
    images = torch.stack([bundle.dataset[i][0] for i in range(len(bundle.dataset))])
    with torch.inference_mode():
        expected = load_model(ckpt).embed(torch.flip(images, dims=[-1])).numpy()
    np.testing.assert_allclose(flipped.features(), expected, rtol=2e-3, atol=2e-3)
    assert not np.allclose(flipped.features(), plain.features(), atol=1e-2)
    np.testing.assert_array_equal(flipped.labels, plain.labels)
    # Built again: the same provenance, so the cache is reused, not rebuilt.
    again = build_flipped_caches({"M": ckpt}, "folder", ["test"], **common)["M"]["test-hflip"]
    assert again.manifest["build_id"] == flipped.manifest["build_id"]
    with pytest.raises(FileNotFoundError, match="checkpoints not found"):
        build_flipped_caches({"M": tmp_path / "missing.pt"}, "folder", ["test"], **common)
    # The study reads both eval sets from those caches, the flipped one under its own name.
    by_eval = eval_score_sets({"M": ckpt}, "folder", ["test"], tta=True, **common)
    assert list(by_eval) == ["test", flipped_split("test")] == ["test", "test-hflip"]
    np.testing.assert_array_equal(by_eval["test-hflip"]["M"].logits, flipped.logits())
    np.testing.assert_array_equal(by_eval["test"]["M"].logits, plain.logits())
    overview = score_set_overview(by_eval)
    assert overview[["eval_set", "model", "kind", "samples"]].values.tolist() == [
        ["test", "M", "mrl", 4],
        ["test-hflip", "M", "mrl", 4],
    ]
    assert list(eval_score_sets({"M": ckpt}, "folder", ["test"], **common)) == ["test"]
    with pytest.raises(ValueError, match="eval_splits is empty"):
        eval_score_sets({"M": ckpt}, "folder", [], **common)


def test_score_set_router_equals_the_array_call():
    s = _random_set()
    flipped = _random_set(seed=1)
    flipped = replace(flipped, labels=s.labels)
    two = SplitSettings(n_splits=2)
    got = score_set_router(s, flipped, two, input_sizes=[2, 4])
    expected = router_study(
        s.probabilities(),
        s.labels,
        s.nesting,
        input_sizes=[2, 4],
        tta_probabilities=flipped.probabilities(),
        settings=two,
    )
    pd.testing.assert_frame_equal(got.results, expected.results)
    with pytest.raises(ValueError, match="FF set"):
        score_set_router(_random_set("ff", name="FF"))
    assert cascade_name("MRL") == "MRL-AC"
    assert cascade_name("MRL", tta=True) == "MRL-AC + flip TTA"


def test_zoom_tradeoff_ranges_follow_the_focus():
    points = pd.DataFrame(
        {
            "method": ["a", "a", "b", "b"],
            "label": ["", "", "", ""],
            "expected_size": [2.0, 4.0, 1.0, 100.0],
            "accuracy": [0.80, 0.85, 0.10, 0.90],
            "accuracy_std": np.nan,
        }
    )
    fig = zoom_tradeoff(tradeoff_figure(points), points, ["a"], margin=0.05)
    # Twice the margin above the best point: room for its marker (the oracle star).
    assert fig.layout.yaxis.range == pytest.approx((0.75, 1.0))
    with_interval = points.assign(accuracy_ci_low=points.accuracy, accuracy_ci_high=0.93)
    zoomed = zoom_tradeoff(tradeoff_figure(with_interval), with_interval, ["a"], margin=0.05)
    assert zoomed.layout.yaxis.range == pytest.approx((0.75, 1.03))
    # b's point at size 1 lies below the y range, so only sizes 2..100 set the x range.
    assert fig.layout.xaxis.range == pytest.approx(np.log10([2 / 1.3, 130]))
    with pytest.raises(ValueError, match="no points for methods"):
        zoom_tradeoff(fig, points, ["c"])


def test_lowest_thresholds_flag_stalled_pairs():
    s = _random_set()
    # Size 4 copies size 2: moving up never helps, so the threshold at 2 is the lowest.
    logits = s.logits.copy()
    logits[1] = logits[0]
    studies = cascade_studies(
        {"MRL": replace(s, logits=logits)}, settings=SplitSettings(n_splits=4)
    )
    stalled = lowest_thresholds(studies)
    row = stalled[stalled.truncate_dim == 2].iloc[0]
    assert row["model"] == "MRL-AC" and row["n_splits"] == 4 and row["share_of_splits"] == 1.0
    assert list(lowest_thresholds(studies, lowest=-1.0).columns) == [
        "model",
        "truncate_dim",
        "n_splits",
        "share_of_splits",
    ]


def test_cascade_and_router_analyses_assemble_the_notebook_tables():
    s = _random_set()
    sets = {"MRL": s, "FF": replace(_random_set("ff", seed=2, name="FF"), labels=s.labels)}
    flipped = {n: replace(v, logits=v.logits[::-1].copy()) for n, v in sets.items()}
    oracle, _ = oracle_tables({"test": sets, "test-hflip": flipped})
    three = SplitSettings(n_splits=3)
    got = cascade_analysis(sets, flipped, oracle, three, model="MRL", eval_set="test")
    assert got.curve == "MRL-AC + flip TTA" and got.cascades == ["MRL-AC", "MRL-AC + flip TTA"]
    studies = cascade_studies(sets, flipped, three)
    pd.testing.assert_frame_equal(got.summary, cascade_summary(studies))
    pd.testing.assert_frame_equal(got.best, best_cap(cascade_summary(studies)))
    single = accuracy_tables(sets)
    expected = tradeoff_points(
        studies=studies,
        single_sizes=single,
        oracle=oracle[(oracle.model == "MRL") & (oracle.eval_set == "test")],
        num_classes=C,
    )
    pd.testing.assert_frame_equal(got.points, expected)  # every study here is the model's
    assert "oracle" not in set(got.cost_points["method"])
    assert got.reductions["curve"].tolist() == ["MRL-AC + flip TTA"] * 4 + ["MRL-AC"] * 4
    plain = cascade_analysis(sets, None, oracle, three, model="MRL", eval_set="test")
    assert plain.curve == "MRL-AC" and plain.cascades == ["MRL-AC"]
    assert cascade_analysis({"MRL": s}, None, oracle, three, model="MRL", eval_set="test")
    with pytest.raises(ValueError, match="no model 'MRL-E'"):
        cascade_analysis(sets, None, oracle, three, model="MRL-E", eval_set="test")

    routed = router_analysis(
        sets, flipped, got, oracle, three.first(2), model="MRL", eval_set="test"
    )
    expected_router = score_set_router(s, flipped["MRL"], SplitSettings(n_splits=2))
    pd.testing.assert_frame_equal(routed.router.results, expected_router.results)
    assert set(routed.points["method"]) == {"MRL-AC + flip TTA", "MRL", "oracle", "router"}
    assert routed.match["curve"].eq("router").all()
    assert routed.match["baseline"].eq("MRL-AC + flip TTA").all()
    assert routed.oracle["eval_set"] == "test" and routed.cascade_best["model"] == got.curve
