"""Grad-CAM per nesting size: equal to pytorch-grad-cam on a single-head model, batched."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from mrl_analysis.interpret.cam_metrics import (
    cam_box_metrics,
    cam_metric_summary,
    cam_rank_similarity,
)
from mrl_analysis.interpret.cams import CamSettings, cam_method, default_target_layer, size_cams
from mrl_analysis.interpret.images import overlay_cam
from mrl_analysis.interpret.plots import cam_grid_figure, cam_summary_figure
from mrl_analysis.interpret.study import case_cams, dataset_cams, load_images, sample_cams
from mrl_analysis.models.network import build_model

C = 10
NESTING = [1, 2, 4, 8, 512]


def _model(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    nesting = None if kind == "ff" else NESTING
    return build_model("resnet18", C, kind, nesting, in_channels=1).eval()


def _images(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


class SingleHead(nn.Module):
    """A plain classifier: the backbone and one head, as a user would build it by hand."""

    def __init__(self, model: nn.Module, m: int) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.m = m
        if model.kind == "mrl":
            self.head = model.fc.classifiers()[model.nesting.index(m)]
        else:  # the shared MRL-E head, its first m columns as a Linear(m, C)
            shared = model.fc.nesting_classifier_0
            self.head = nn.Linear(m, C)
            with torch.no_grad():
                self.head.weight.copy_(shared.weight[:, :m])
                self.head.bias.copy_(shared.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.backbone(x), 1)[:, : self.m])


@pytest.mark.parametrize(
    ("kind", "sizes", "method", "library_class"),
    [
        ("mrl", NESTING, "gradcam", GradCAM),
        ("mrl-e", [3, 8, 100, 512], "gradcam", GradCAM),
        ("mrl", [2, 512], "gradcam++", GradCAMPlusPlus),
    ],
)
def test_matches_pytorch_grad_cam_on_a_single_head_model(kind, sizes, method, library_class):
    model = _model(kind)
    images = _images()
    result = size_cams(model, images, sizes, settings=CamSettings(method, batch_size=7))
    assert result.cams.shape == (len(images), len(sizes), 28, 28)
    assert result.target_layer == "backbone.layer2.1"
    for j, m in enumerate(sizes):
        single = SingleHead(model, m).eval()
        with torch.no_grad():
            preds = single(images).argmax(dim=1)
        rows = result.table[result.table["truncate_dim"] == m].sort_values("image")
        np.testing.assert_array_equal(rows["predicted"].to_numpy(), preds.numpy())
        cam = library_class(model=single, target_layers=[single.backbone.layer2[-1]])
        expected = cam(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in preds])
        np.testing.assert_allclose(result.cams[:, j], expected, atol=2e-4)
    # the library's own call leaves gradients behind; ours must not have touched the flags
    assert all(p.requires_grad for p in model.parameters())


def test_cams_differ_between_sizes_where_predictions_differ():
    model = _model("mrl")
    result = size_cams(model, _images(8), labels=np.arange(8) % C)
    preds = result.table.pivot(index="image", columns="truncate_dim", values="predicted")
    pairs = 0
    for i in range(8):
        for a in range(len(NESTING)):
            for b in range(a + 1, len(NESTING)):
                if preds.iloc[i, a] != preds.iloc[i, b]:
                    pairs += 1
                    assert not np.allclose(result.cams[i, a], result.cams[i, b], atol=1e-3), (
                        f"image {i}: sizes {NESTING[a]} and {NESTING[b]} predict different "
                        "classes but have the same CAM"
                    )
    assert pairs > 0, "the random model should disagree across sizes somewhere"


def test_deterministic_and_independent_of_batching():
    model = _model("mrl-e")
    images = _images(3)
    first = size_cams(model, images, [2, 7, 512], settings=CamSettings(batch_size=64))
    again = size_cams(model, images, [2, 7, 512], settings=CamSettings(batch_size=64))
    one_by_one = size_cams(model, images, [2, 7, 512], settings=CamSettings(batch_size=1))
    np.testing.assert_array_equal(first.cams, again.cams)
    np.testing.assert_allclose(first.cams, one_by_one.cams, atol=1e-5)
    assert first.table.equals(again.table)


def test_targets_true_and_explicit_classes():
    model = _model("mrl")
    images = _images(4)
    labels = np.array([3, 1, 4, 1])
    by_label = size_cams(
        model, images, [1, 512], labels=labels, settings=CamSettings(target="true")
    )
    explicit = size_cams(model, images, [1, 512], labels=labels, classes=labels)
    assert (by_label.table["target_class"].to_numpy() == np.repeat(labels, 2)).all()
    np.testing.assert_array_equal(by_label.cams, explicit.cams)
    table = by_label.table
    assert (table["correct"] == (table["predicted"] == table["label"])).all()
    per_size = explicit.table.groupby("image")["target_probability"].nunique()
    assert (per_size == 2).all(), "the two heads should give the label different probabilities"


def test_ff_model_and_eigencam():
    model = _model("ff")
    result = size_cams(model, _images(3), settings=CamSettings("eigencam"))
    assert result.sizes == [512]
    mrl = size_cams(_model("mrl"), _images(3), [1, 512], settings=CamSettings("EigenCAM"))
    # EigenCAM ignores the target class, and all sizes share the backbone
    np.testing.assert_allclose(mrl.cams[:, 0], mrl.cams[:, 1], atol=1e-6)


def test_bad_input_is_refused_clearly():
    model = _model("mrl")
    images = _images(2)
    with pytest.raises(ValueError, match="heads only for sizes"):
        size_cams(model, images, [3])
    with pytest.raises(ValueError, match="unknown CAM method"):
        size_cams(model, images, settings=CamSettings("magic"))
    with pytest.raises(ValueError, match="needs labels"):
        size_cams(model, images, settings=CamSettings(target="true"))
    with pytest.raises(ValueError, match="explicit classes go to"):
        CamSettings(target="sideways")
    with pytest.raises(ValueError, match="batch_size"):
        CamSettings(batch_size=0)
    with pytest.raises(ValueError, match="fit neither"):
        size_cams(model, images, [1, 512], classes=np.zeros((3, 2), dtype=int))
    with pytest.raises(ValueError, match="no module"):
        size_cams(model, images, settings=CamSettings(target_layer="backbone.layer9"))
    with pytest.raises(ValueError, match=r"\[n, C, H, W\]"):
        size_cams(model, images[0])
    assert cam_method("GradCAM++") is GradCAMPlusPlus


def test_default_target_layer_keeps_spatial_resolution():
    torch.manual_seed(0)
    imagenet_stem = build_model("resnet18", C, "mrl", [8, 512], in_channels=1)
    small_stem = build_model("resnet18", C, "mrl", [8, 512], in_channels=1, stem="small")
    assert default_target_layer(imagenet_stem, (1, 28, 28))[0] == "backbone.layer2.1"
    assert default_target_layer(imagenet_stem, (1, 224, 224))[0] == "backbone.layer4.1"
    assert default_target_layer(small_stem, (1, 28, 28))[0] == "backbone.layer4.1"
    mobile = build_model("mobilenet_v3_small", C, "mrl", [8, 576])
    name, reshape = default_target_layer(mobile, (3, 64, 64))
    assert name.startswith("backbone.features.") and reshape is None
    cams = size_cams(mobile.eval(), torch.randn(2, 3, 64, 64), [8, 576])
    assert cams.cams.shape == (2, 2, 64, 64)


def test_box_metrics_on_hand_made_maps():
    cams = np.zeros((3, 2, 8, 8), dtype=np.float32)
    cams[0, 0, 2, 3] = 1.0  # peak inside the box of image 0 (x 1..4, y 1..4)
    cams[0, 0, 7, 7] = 0.5  # and a third of the energy outside
    cams[0, 1, 6, 6] = 1.0  # size 2: all outside
    cams[1] = 1.0  # uniform: energy = area fraction
    boxes = np.array([[1, 1, 4, 4], [0, 0, 3, 1], [np.nan] * 4])
    table = cam_box_metrics(cams, boxes, [1, 2], sample_index=[10, 11, 12])
    assert table["sample_index"].tolist() == [10, 10, 11, 11]  # image 2 has no box
    np.testing.assert_allclose(table["energy_in_box"], [2 / 3, 0.0, 8 / 64, 8 / 64])
    np.testing.assert_allclose(table["box_area_fraction"], [16 / 64, 16 / 64, 8 / 64, 8 / 64])
    assert table["pointing_hit"].tolist() == [True, False, True, True]
    summary = cam_metric_summary(table, ["energy_in_box", "pointing_hit"], model="MRL")
    row = summary[(summary["truncate_dim"] == 1) & (summary["metric"] == "pointing_hit")]
    assert row["mean"].item() == 1.0 and row["n"].item() == 2 and row["model"].item() == "MRL"
    # A bootstrap interval over the two images: between the two images' values.
    energy = summary[(summary["truncate_dim"] == 1) & (summary["metric"] == "energy_in_box")]
    assert 8 / 64 <= energy["ci_low"].item() <= energy["mean"].item()
    assert energy["mean"].item() <= energy["ci_high"].item() <= 2 / 3 + 1e-6
    assert row["ci_low"].item() == row["ci_high"].item() == 1.0


def test_rank_similarity_to_the_largest_size():
    ramp = np.arange(16, dtype=np.float32).reshape(4, 4) / 15
    cams = np.stack([np.stack([ramp, 1 - ramp, np.zeros((4, 4)), ramp])])  # 1 image, 4 sizes
    table = cam_rank_similarity(cams, [1, 2, 4, 8])
    np.testing.assert_allclose(table["spearman"].to_numpy(), [1.0, -1.0, np.nan, 1.0])
    assert (table["reference_dim"] == 8).all()
    # An undefined correlation does not count: no value, no interval at that size.
    summary = cam_metric_summary(table, ["spearman"]).set_index("truncate_dim")
    assert summary.loc[4, "n"] == 0 and np.isnan(summary.loc[4, ["ci_low", "ci_high"]]).all()
    assert summary.loc[2, "ci_low"] == summary.loc[2, "ci_high"] == -1.0
    with pytest.raises(ValueError, match="reference size"):
        cam_rank_similarity(cams, [1, 2, 4, 8], reference=16)


def test_grid_figure_marks_right_and_wrong():
    model = _model("mrl")
    images = _images(2)
    result = size_cams(model, images, [1, 512], labels=np.array([0, 5]))
    fig = cam_grid_figure(images, result, [f"class {c}" for c in range(C)], row_labels=["a", "b"])
    assert len(fig.data) == 4 and all(t.type == "image" for t in fig.data)
    table = result.table.sort_values(["image", "truncate_dim"])
    for annotation, correct in zip(fig.layout.annotations, table["correct"], strict=False):
        assert ("✓" in annotation.text) == bool(correct)
        assert annotation.font.color == ("#1a7f37" if correct else "#cf222e")
    rgb = overlay_cam(images[0], result.cams[0, 0])
    assert rgb.shape == (28, 28, 3) and rgb.dtype == np.uint8
    # Responsive: no fixed width to be clipped in JupyterLab; 140 px panels plus titles.
    assert fig.layout.width is None and fig.layout.autosize
    assert fig.layout.height == (140 + 22) * 2 + 90
    # Ten sizes: the panels shrink to what a page width holds, and the height with them.
    ten = cam_grid_figure(images, size_cams(model, images, [1] * 10), row_labels=["a", "b"])
    assert ten.layout.height == round((78 + 22) * 2 + 90)


def test_dataset_cams_equal_size_cams_on_the_stacked_images():
    model = _model("mrl")
    images = _images(5)
    labels = torch.tensor([0, 1, 2, 3, 4])
    dataset = torch.utils.data.TensorDataset(images, labels)
    picked, picked_labels = load_images(dataset, [4, 0, 2])
    assert torch.equal(picked, images[[4, 0, 2]]) and picked_labels.tolist() == [4, 0, 2]
    streamed = dataset_cams(model, dataset, [4, 0, 2], [1, 512], images_per_batch=2, progress=False)
    direct = size_cams(model, picked, [1, 512], labels=picked_labels, sample_index=[4, 0, 2])
    np.testing.assert_allclose(streamed.cams, direct.cams, atol=1e-5)
    pd.testing.assert_frame_equal(streamed.table, direct.table)
    summary = cam_metric_summary(
        cam_rank_similarity(streamed.cams, streamed.sizes), ["spearman"], model="MRL"
    )
    assert summary["truncate_dim"].tolist() == [1, 512]
    assert summary.loc[summary["truncate_dim"] == 512, "mean"].item() == pytest.approx(1.0)
    assert len(cam_summary_figure(summary).data) == 1
    with pytest.raises(ValueError, match="indices must lie"):
        load_images(dataset, [5])


def test_sample_cams_draw_a_sorted_random_sample_in_cache_order():
    model = _model("mrl")
    images = _images(6)
    dataset = torch.utils.data.TensorDataset(images, torch.arange(6) % C)
    positions = np.array([5, 4, 3, 2, 1, 0])  # cache index i is dataset position 5 - i
    got = sample_cams(model, dataset, positions, 3, [1, 512], seed=0, progress=False)
    chosen = np.sort(np.random.default_rng(0).choice(6, 3, replace=False))
    np.testing.assert_array_equal(got.sample_index, chosen)
    direct = size_cams(model, images[positions[chosen]], [1, 512], labels=positions[chosen] % C)
    np.testing.assert_allclose(got.cams, direct.cams, atol=1e-5)
    assert len(sample_cams(model, dataset, positions, 50, [1, 512], progress=False).cams) == 6


def test_case_cams_follow_the_cases_in_cache_order():
    model = _model("mrl")
    images = _images(4)
    dataset = torch.utils.data.TensorDataset(images, torch.tensor([0, 1, 2, 3]))
    positions = np.array([3, 2, 1, 0])
    cases = pd.DataFrame(
        {"sample_index": [0, 2], "direction": ["fixed", "broken"], "confusion": [None, None]}
    )
    shown = case_cams(model, dataset, positions, cases, [1, 512])
    assert torch.equal(shown.images, images[[3, 1]])
    direct = size_cams(model, images[[3, 1]], [1, 512], labels=[3, 1], sample_index=[0, 2])
    np.testing.assert_allclose(shown.cams.cams, direct.cams, atol=1e-5)
    table = shown.table
    assert table["direction"].tolist() == ["fixed", "fixed", "broken", "broken"]
    assert table["label"].tolist() == [3, 3, 1, 1]
    with pytest.raises(ValueError, match="no disagreement cases"):
        case_cams(model, dataset, positions, cases.iloc[:0])


def test_cam_summary_figure_shows_shares_as_percent():
    summary = pd.DataFrame(
        {
            "truncate_dim": [1, 512, 1, 512],
            "metric": ["spearman", "spearman", "pointing_hit", "pointing_hit"],
            "mean": [0.4, 1.0, 0.5, 0.75],
            "sem": [0.1, 0.0, 0.1, 0.1],
            "n": 4,
            "ci_low": [0.2, 1.0, 0.3, 0.5],
            "ci_high": [0.5, 1.0, 0.7, 1.0],
        }
    )
    fig = cam_summary_figure(summary, "t")
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.tickvals) == [1, 512]
    # The bootstrap interval over the images, as asymmetric error bars.
    np.testing.assert_allclose(fig.data[0].error_y.array, [0.1, 0.0])
    np.testing.assert_allclose(fig.data[0].error_y.arrayminus, [0.2, 0.0])
    titles = [a.text for a in fig.layout.annotations]
    assert titles == ["Spearman correlation with the largest size", "Peak inside the box"]
    with pytest.raises(ValueError, match="ci_high"):
        cam_summary_figure(summary.drop(columns=["ci_low", "ci_high"]))
    assert fig.layout.yaxis.tickformat is None  # a correlation, not a share
    assert fig.layout.yaxis2.tickformat == ".0%"
    # Many sizes in narrow panels: every other size as a tick (the largest kept), one title.
    many = pd.concat(
        [summary.iloc[:1].assign(truncate_dim=m) for m in (4, 8, 16, 32, 64, 128, 256, 512)]
        + [summary.iloc[2:3].assign(truncate_dim=m) for m in (4, 8, 16, 32, 64, 128, 256, 512)]
    )
    crowded = cam_summary_figure(many)
    assert list(crowded.layout.xaxis.tickvals) == [8, 32, 128, 512]
    assert crowded.layout.xaxis.title.text == "Representation size (dims)"
    assert not crowded.layout.xaxis2.title.text
    assert fig.layout.template.layout.font.size == 13  # the workbench template
