"""The explorer: its numbers on a tiny real cache, its widgets, figures and notebook.

Every test here builds its own data: a Fashion-MNIST-format test split of 240 synthetic
images (idx files in tmp, read by the real ``get_dataset``), an untrained ResNet18 MRL-E
model saved as a real checkpoint, and its embedding cache. The notebook gets their paths
through papermill's parameters, exactly as the batch runner passes them. The explorer in
a real browser (JupyterLab, the demo's notebooks as a user opens them, the slider's
latency) is tests/app/test_browser.py.
"""

from __future__ import annotations

import base64
import gzip
import re
import struct
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hand_caches import hand_cache

from mrl_analysis.data.fashion_mnist import FASHION_MNIST_CLASSES
from mrl_analysis.explore.plots import PLOTLY_MIMETYPE
from mrl_analysis.explore.state import ExplorerState, cosine_texts
from mrl_analysis.explore.study import load_inputs
from mrl_analysis.explore.widget import HEATMAP_PX, IMAGE_PX, _png, explore
from mrl_analysis.interpret.study import cache_disagreements
from mrl_analysis.models.checkpoints import save_checkpoint
from mrl_analysis.models.network import build_model

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "00_explore.ipynb"
NESTING = [1, 2, 4, 8, 512]
N = 240


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> SimpleNamespace:
    """Synthetic Fashion-MNIST test split, an untrained MRL-E checkpoint and its cache."""
    root = tmp_path_factory.mktemp("explore")
    rng = np.random.default_rng(0)
    labels = np.arange(N) % 10
    images = rng.integers(0, 60, (N, 28, 28))
    for c in range(10):  # a bar whose height encodes the class, so neighbours make sense
        images[labels == c, 2 + 2 * c : 5 + 2 * c, 4:24] = 220
    data_root = root / "fashion-mnist"
    data_root.mkdir()
    _write_idx(data_root / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(data_root / "t10k-labels-idx1-ubyte.gz", labels)

    torch.manual_seed(0)
    model = build_model("resnet18", 10, "mrl-e", NESTING, in_channels=1)
    model.class_names = list(FASHION_MNIST_CLASSES)
    checkpoint = save_checkpoint(root / "tiny-mrl-e.pt", model, meta={"dataset": "fashion-mnist"})
    params = {
        "dataset": "fashion-mnist",
        "models": {"tiny": str(checkpoint)},
        "model": "tiny",
        "cache_root": str(root / "cache"),
        "data_root": str(data_root),
        "split": "test",
    }
    net, bundle, cache = load_inputs(
        params["models"],
        "tiny",
        "fashion-mnist",
        "test",
        cache_root=params["cache_root"],
        data_root=data_root,
        progress=False,
    )
    return SimpleNamespace(root=root, params=params, model=net, bundle=bundle, cache=cache)


def _logits(cache, m: int) -> np.ndarray:
    # trained sizes: the model's own logits; other MRL-E sizes: cached features @ head
    return cache.logits()[NESTING.index(m)] if m in NESTING else cache.logits_at(m)


def _expected(cache, m: int) -> tuple[np.ndarray, float]:
    preds = _logits(cache, m).argmax(axis=1)
    return preds, float(np.mean(preds == cache.labels))


# ------------------------------------------------------------------ no browser


def test_mrl_e_sizes_stop_at_the_largest_trained_size():
    """A backbone wider than the nesting: the slider offers only the sizes the head learned."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 30)
    logits = rng.normal(size=(3, 30, 3)).astype(np.float32)
    head = (rng.normal(size=(3, 64)).astype(np.float32), np.zeros(3, np.float32))
    features = rng.random((30, 64)).astype(np.float32)
    cache = hand_cache("mrl-e", [4, 8, 16], logits, labels, features=features, head=head)
    assert ExplorerState(cache).sizes == list(range(1, 17))


def test_state_agrees_with_the_cache(tiny):
    cache = tiny.cache
    state = ExplorerState(cache, images=tiny.bundle)
    assert state.sizes == list(range(1, 513))  # MRL-E: every size
    labels = np.asarray(cache.labels)
    for m in [1, 3, 8, 100, 512]:
        preds, accuracy = _expected(cache, m)
        np.testing.assert_allclose(state.logits(m), _logits(cache, m), rtol=1e-5, atol=1e-6)
        assert state.accuracy(m)[0] == pytest.approx(accuracy)
        counts, names = state.confusion(m)
        assert counts.sum() == N and np.trace(counts) == int((preds == labels).sum())
        assert names == list(FASHION_MNIST_CLASSES)
        coarse, coarse_names = state.confusion(m, "superclass")
        assert coarse.sum() == N and len(coarse_names) == len(set(cache.hierarchy.values()))
        expected = cache_disagreements(cache, small=m, large=512, top=10) if m < 512 else None
        if expected is not None:
            got = state.disagreements(m)[["direction", "sample_index"]]
            assert got.equals(expected[["direction", "sample_index"]])

    # neighbours: faiss against brute force (size 100: no ties among cosine similarities)
    x = cache.features(100, normalize=True)
    sims = x @ x[7]
    sims[7] = -np.inf
    brute = np.argsort(-sims, kind="stable")[:8]
    assert state.neighbours(7, 100)["neighbour"].tolist() == brute.tolist()

    top = state.top_classes(7, 100)
    logits = _logits(cache, 100)[7]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert top["class"].tolist() == np.argsort(-probs)[:5].tolist()
    np.testing.assert_allclose(top["probability"], np.sort(probs)[::-1][:5], rtol=1e-5)


def test_widgets_follow_the_slider_and_the_sample(tiny):
    app = explore(tiny.cache, model=tiny.model, images=tiny.bundle)
    assert app.errors.value == ""
    start = app.sample
    for m in [512, 37]:
        app.set_size(m)
        app.wait_for_cam(timeout=60)
        preds, accuracy = _expected(tiny.cache, m)
        assert f'class="mrl-size">{m}<' in app.summary.value
        assert f'class="mrl-accuracy">{accuracy:.4f}<' in app.summary.value
        predicted = FASHION_MNIST_CLASSES[preds[start]]
        assert f'class="mrl-prediction">{predicted}<' in app.sample_html.value
        assert (start, m) in app.state._cams and app.cam_image.value[:4] == b"\x89PNG"
        assert f"at m={m} " in app.cam_caption.value
        # the heat map is the state's confusion matrix at this size
        heat = _heatmap(app)
        np.testing.assert_array_equal(_array(heat["customdata"]), app.state.confusion(m)[0])
    case = app.picker.options[1][1]
    app.picker.value = case
    assert app.sample == case and f'class="mrl-sample">{case}<' in app.sample_html.value
    assert all(t.value[:4] == b"\x89PNG" for t in app.thumbs)
    assert app.timings["update"] < 5 and app.errors.value == ""
    app.wait_for_cam(timeout=60)
    figures = app.snapshot_figures()
    assert set(figures) == {"overview", "sample"}
    assert len(figures["sample"][0].data) == 2 + 8 + 1  # image, CAM, 8 neighbours, top-5


def _array(value) -> np.ndarray:
    """An array of a plotly JSON spec: a list, or plotly's typed array (base64 bytes)."""
    if isinstance(value, dict):
        raw = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        return raw.reshape([int(n) for n in str(value.get("shape", len(raw))).split(",")])
    return np.asarray(value)


def _heatmap(app) -> dict:
    (output,) = app.confusion.outputs
    return output["data"][PLOTLY_MIMETYPE]["data"][0]


def test_the_summary_is_sent_first_and_the_cam_last(tiny):
    """What the user waits for on a move comes first: the summary line, before anything
    else is computed or sent; the Grad-CAM last, from its own thread."""
    app = explore(tiny.cache, model=tiny.model, images=tiny.bundle, size=8)
    app.wait_for_cam(timeout=60)
    order: list[str] = []
    watched = {
        "summary": (app.summary, "value"),
        "confusion": (app.confusion, "outputs"),
        "disagreements": (app.disagreement_html, "value"),
        "sample": (app.sample_html, "value"),
        "cam": (app.cam_image, "value"),
    }
    for name, (widget, trait) in watched.items():
        widget.observe(lambda _, name=name: order.append(name), names=trait)
    app.set_size(100)
    assert order[0] == "summary"
    app.wait_for_cam(timeout=60)
    assert order == ["summary", "sample", "disagreements", "confusion", "cam"]
    assert app.timings["summary"] < app.timings["update"]

    # a sample change sends neither the summary, the heat map nor the disagreement table
    order.clear()
    app.set_sample((app.sample + 1) % N)
    app.wait_for_cam(timeout=60)
    assert order == ["sample", "cam"]

    # moves faster than the CAM thread: only the last move's CAM is shown
    for m in (3, 5, 7):
        app.set_size(m)
    app.wait_for_cam(timeout=60)
    assert "at m=7 " in app.cam_caption.value
    assert app.cam_image.value == _png(app.state.cam_overlay(app.sample, 7), IMAGE_PX)

    app.cam_toggle.value = False
    assert app.cam_caption.value == "Grad-CAM off" and app.cam_image.value == b""


def test_heatmap_tables_and_cosines_are_readable(tiny):
    app = explore(tiny.cache, images=tiny.bundle, size=8, sample=3, show_cam=False)
    heat = _heatmap(app)
    names = list(FASHION_MNIST_CLASSES)
    assert heat["type"] == "heatmap" and heat["x"] == names and heat["y"] == names
    layout = _bundle_layout(app)
    assert layout["xaxis"]["title"]["text"] == "predicted"
    assert layout["yaxis"]["title"]["text"] == "true"
    # a fixed size: the heat map is not stretched to the table beside it
    assert (layout["width"], layout["height"]) == HEATMAP_PX
    assert app.confusion.layout.height == f"{HEATMAP_PX[1]}px"
    assert app.disagreement_html.layout.max_height == f"{HEATMAP_PX[1]}px"

    # tables: every cell padded, floats with 3 decimals, kind and sample in separate cells
    assert "padding:2px 10px" in app.disagreement_html.value
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", app.disagreement_html.value)
    assert cells[0].startswith(("✗ at 8", "✓ at 8")) and cells[1].isdigit()
    top = re.findall(r"<td[^>]*>([^<]*)</td>", app.sample_html.value)
    probabilities = [c for c in top if re.fullmatch(r"\d\.\d+", c)]
    assert probabilities and all(re.fullmatch(r"\d\.\d{3}", p) for p in probabilities)

    # neighbour cosines: enough decimals that none reads as an exact 0 or 1 it is not
    captions = " ".join(c.value for c in app.thumb_captions)
    shown = [float(v) for v in re.findall(r"cos (-?\d\.\d+)", captions)]
    exact = app.state.neighbours(3, 8)["similarity"].to_numpy()
    assert len(shown) == 8
    assert all(v not in (0.0, 1.0) or abs(v - e) < 1e-6 for v, e in zip(shown, exact, strict=True))
    assert cosine_texts(np.array([0.99996, 0.9, 1.0, 0.00004, -0.5])) == [
        "0.99996",
        "0.90000",
        "1.00000",
        "0.00004",
        "-0.50000",
    ]
    assert cosine_texts(np.array([0.123456, 0.5])) == ["0.123", "0.500"]


def _bundle_layout(app) -> dict:
    (output,) = app.confusion.outputs
    return output["data"][PLOTLY_MIMETYPE]["layout"]


def test_snapshot_figures_use_the_shared_axes_and_keep_fractions(tiny):
    from mrl_analysis.data.hierarchy import resolve_superclasses
    from mrl_analysis.explore.state import sample_table
    from mrl_analysis.explore.study import match_images, sample_positions

    state = ExplorerState(tiny.cache, images=tiny.bundle)
    cache = tiny.cache
    expected = resolve_superclasses(cache.class_ids, cache.class_names, cache.hierarchy)
    assert (state.smap.names, state.smap.reject) == (expected.names, expected.reject)
    assert state.smap.index.tolist() == expected.index.tolist()
    app = explore(tiny.cache, images=tiny.bundle, size=8, sample=3, show_cam=False)
    figures = app.snapshot_figures()
    overview, accuracy = figures["overview"]
    assert overview.layout.xaxis.type == "log" and list(overview.layout.xaxis.tickvals) == NESTING
    assert overview.layout.yaxis.tickformat == ".0%"
    assert accuracy["value"].between(0, 1).all()
    assert set(accuracy["metric"]) == {"accuracy", "superclass_accuracy"}
    # the figure names them readably and titles the confusion matrix's axes
    names = {trace.name for trace in overview.data if trace.type == "scatter"}
    assert names == {"Top-1 accuracy", "Superclass accuracy"}
    assert overview.layout.xaxis2.title.text == "predicted"
    assert overview.layout.yaxis2.title.text == "true"
    assert list(overview.data[-1].x) == list(FASHION_MNIST_CLASSES)
    fine = accuracy[accuracy["metric"] == "accuracy"].set_index("truncate_dim")["value"]
    assert fine[8] == pytest.approx(_expected(tiny.cache, 8)[1])

    sample, table = figures["sample"]
    assert len(sample.data) == 1 + 8 + 1  # image, 8 neighbours, top-5 (no CAM)
    view = state.view(8, 3)
    assert table.equals(sample_table(view))
    assert table["kind"].tolist() == ["top-5"] * 5 + ["neighbour"] * 8
    assert table["probability"].iloc[:5].is_monotonic_decreasing
    assert table["sample_index"].iloc[5:].tolist() == view.neighbours["neighbour"].tolist()

    # a dataset in the cache's order, or the bundle matched by sample ids
    ids = list(tiny.cache.sample_ids)
    dataset, positions = match_images(tiny.bundle, ids[::-1])
    assert dataset is tiny.bundle.dataset
    assert positions.tolist() == sample_positions(tiny.bundle, ids)[::-1].tolist()
    with pytest.raises(ValueError, match="are not in the dataset"):
        sample_positions(tiny.bundle, ["nope"])


def test_bad_input_is_refused(tiny):
    with pytest.raises(ValueError, match="samples and the cache"):
        ExplorerState(tiny.cache, images=torch.utils.data.TensorDataset(torch.zeros(3, 1)))
    state = ExplorerState(tiny.cache)
    with pytest.raises(ValueError, match="not available"):
        state.check_size(513)
    with pytest.raises(ValueError, match="out of range"):
        state.top_classes(N, 8)
    with pytest.raises(ValueError, match="needs the model"):
        state.cam(0, 8)


def test_notebook_runs_headless(tiny, tmp_path, monkeypatch):
    import papermill

    from mrl_analysis.app.runner import resolve_kernel

    figures = tmp_path / "figures"
    monkeypatch.setenv("MRL_FIGURES_DIR", str(figures))
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(tmp_path / "executed.ipynb"),
        parameters=tiny.params,
        kernel_name=resolve_kernel(),
        progress_bar=False,
        cwd=str(tmp_path),
        extra_arguments=["--IPKernelApp.log_level=ERROR"],  # not the TCP-encryption warning
    )
    # the widgets' initial state, rendered statically, with its tables
    for name in ("explore_overview", "explore_sample"):
        assert (figures / f"{name}.png").stat().st_size > 1000
        assert (figures / f"{name}.csv").exists()
