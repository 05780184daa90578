"""The explorer: its numbers on a tiny real cache, its notebook headless and in a real browser.

Every test here builds its own data: a Fashion-MNIST-format test split of 240 synthetic
images (idx files in tmp, read by the real ``get_dataset``), an untrained ResNet18 MRL-E
model saved as a real checkpoint, and its embedding cache. The notebook gets their paths
through papermill's parameter injection into a copy of ``notebooks/00_explore.ipynb``
(exactly what the batch runner does), never through environment variables.

The browser test starts JupyterLab on 127.0.0.1 (random token, a free port, its own
config / data / runtime / settings dirs under tmp), opens the notebook copy in headless
Debian Chromium through Playwright, runs all cells, drags the size slider to its right end
and checks the displayed accuracy and prediction against the cache. Screenshots before and
after go to ``figures/browser/``. Only a missing Chromium skips it.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest
import torch

from mrl_analysis.data.fashion_mnist import FASHION_MNIST_CLASSES
from mrl_analysis.explore.state import ExplorerState
from mrl_analysis.explore.study import load_inputs
from mrl_analysis.explore.widget import explore
from mrl_analysis.interpret.study import cache_disagreements
from mrl_analysis.models.checkpoints import save_checkpoint
from mrl_analysis.models.network import build_model

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "00_explore.ipynb"
SCREENSHOTS = REPO / "figures" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
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
        preds, accuracy = _expected(tiny.cache, m)
        assert f'class="mrl-size">{m}<' in app.summary.value
        assert f'class="mrl-accuracy">{accuracy:.4f}<' in app.summary.value
        predicted = FASHION_MNIST_CLASSES[preds[start]]
        assert f'class="mrl-prediction">{predicted}<' in app.sample_html.value
        assert (start, m) in app.state._cams and app.cam_image.value[:4] == b"\x89PNG"
    case = app.picker.options[1][1]
    app.picker.value = case
    assert app.sample == case and f'class="mrl-sample">{case}<' in app.sample_html.value
    assert all(t.value[:4] == b"\x89PNG" for t in app.thumbs)
    assert app.timings["update"] < 5 and app.errors.value == ""
    figures = app.snapshot_figures()
    assert set(figures) == {"overview", "sample"}
    assert len(figures["sample"][0].data) == 2 + 8 + 1  # image, CAM, 8 neighbours, top-5


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


def _notebook_copy(tiny, folder: Path) -> Path:
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(NOTEBOOK)), tiny.params)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / NOTEBOOK.name
    nbformat.write(nb, path)
    return path


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


# ---------------------------------------------------------------------- browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5) -> int:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status


def _write_lab_settings(settings: Path) -> None:
    # No news / update pop-ups over the page, and every cell kept in the DOM.
    files = {
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    }
    for name, value in files.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))


class JupyterLab:
    """A JupyterLab server of our own on 127.0.0.1; ``stop`` shuts it and its kernels down."""

    def __init__(self, root: Path, state: Path) -> None:
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        dirs = {name: state / name for name in ("config", "data", "runtime", "settings", "ws")}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        _write_lab_settings(dirs["settings"])
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(dirs["config"]),
            "JUPYTER_DATA_DIR": str(dirs["data"]),
            "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
            "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
            "JUPYTERLAB_WORKSPACES_DIR": str(dirs["ws"]),
            "IPYTHONDIR": str(state / "ipython"),
            "MRL_FIGURES_DIR": str(root / "figures"),
        }
        self.log = open(state / "jupyterlab.log", "w")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--ServerApp.ip=127.0.0.1",
                f"--ServerApp.port={self.port}",
                "--ServerApp.port_retries=0",
                f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={root}",
                "--ServerApp.allow_root=True",  # CI containers often run as root
                "--ServerApp.terminals_enabled=False",
                "--LabApp.extension_manager=readonly",  # no PyPI look-ups
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its kernels join its process group
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(f"{self.url}/api/status?token={self.token}") == 200:
                    break
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"JupyterLab did not start; see {state / 'jupyterlab.log'}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            request = urllib.request.Request(
                f"{self.url}/api/shutdown",
                method="POST",
                headers={"Authorization": f"token {self.token}"},
            )
            try:
                urllib.request.urlopen(request, timeout=10).close()
                self.process.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=10)
        try:  # kernels left behind in the server's process group
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


def _texts(page, selector: str) -> list[str]:
    return [t.strip() for t in page.locator(selector).all_inner_texts()]


def _wait_for_run(page, timeout: float) -> None:
    """Until every code cell has an execution count, or an error shows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.locator(".jp-OutputArea-output", has_text="Traceback").count():
            return
        prompts = _texts(page, ".jp-CodeCell .jp-InputArea-prompt")
        if prompts and all(re.fullmatch(r"\[\d+\]:", p) for p in prompts):
            return
        time.sleep(1)
    raise AssertionError(f"the notebook did not finish in {timeout} s: prompts {prompts}")


def _wait_for_text(page, selector: str, unwanted: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        texts = _texts(page, selector)
        if texts and texts[0] != unwanted:
            return texts[0]
        time.sleep(0.25)
    raise AssertionError(f"{selector} still shows {unwanted!r} after {timeout} s")


@pytest.mark.browser
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
)
def test_explorer_in_a_real_browser(tiny, tmp_path):
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    work = tmp_path / "work"
    _notebook_copy(tiny, work)
    lab = JupyterLab(work, tmp_path / "jupyter")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1100})
                page.goto(f"{lab.url}/lab/tree/{NOTEBOOK.name}?token={lab.token}")
                page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
                # the kernel has started and connected (the indicator alone is idle before)
                idle = page.locator(".jp-StatusBar-Widget", has_text="(ipykernel) | Idle")
                idle.first.wait_for(timeout=90_000)
                page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
                page.locator(".lm-Menu-itemLabel").get_by_text("Run All Cells", exact=True).click()
                _wait_for_run(page, timeout=180)
                tracebacks = page.locator(".jp-OutputArea-output", has_text="Traceback")
                assert tracebacks.count() == 0, tracebacks.first.inner_text()

                explorer = page.locator(".mrl-explorer")
                explorer.wait_for(timeout=30_000)
                page.wait_for_selector(".mrl-accuracy", timeout=30_000)
                page.wait_for_selector(".mrl-cam-caption", timeout=60_000)
                sample = int(_texts(page, ".mrl-sample")[0])
                before = {
                    "size": _texts(page, ".mrl-size")[0],
                    "accuracy": _texts(page, ".mrl-accuracy")[0],
                    "prediction": _texts(page, ".mrl-prediction")[0],
                }
                explorer.scroll_into_view_if_needed()
                explorer.screenshot(path=SCREENSHOTS / "explore_before.png")

                handle = page.locator(".mrl-size-slider .noUi-handle")
                track = page.locator(".mrl-size-slider .noUi-target").bounding_box()
                box = handle.bounding_box()
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                page.mouse.down()
                end_x = track["x"] + track["width"] + 20
                page.mouse.move(end_x, box["y"] + box["height"] / 2, steps=15)
                page.mouse.up()
                size_after = _wait_for_text(page, ".mrl-size", before["size"])
                # the CAM is drawn last, after everything else has been updated
                page.locator(".mrl-cam-caption", has_text=f"at m={size_after} ").wait_for(
                    timeout=60_000
                )
                after = {
                    "size": size_after,
                    "accuracy": _texts(page, ".mrl-accuracy")[0],
                    "prediction": _texts(page, ".mrl-prediction")[0],
                }
                explorer.screenshot(path=SCREENSHOTS / "explore_after.png")
                page.screenshot(path=SCREENSHOTS / "explore_page_after.png")
                errors = _texts(page, ".mrl-error")
                assert not errors, errors[0]

                # saved to disk: no cell errored, every cell ran
                page.keyboard.press("Control+s")
                page.wait_for_timeout(1500)
            finally:
                browser.close()
    finally:
        lab.stop()

    saved = nbformat.read(work / NOTEBOOK.name, as_version=4)
    code = [c for c in saved.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code), "not every cell ran"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]

    assert before["size"] == "1" and after["size"] == "512"
    for shown in (before, after):
        preds, accuracy = _expected(tiny.cache, int(shown["size"]))
        assert shown["accuracy"] == f"{accuracy:.4f}"
        assert shown["prediction"] == FASHION_MNIST_CLASSES[preds[sample]]
    # the initial sample is a disagreement case between sizes 1 and 512
    assert before["prediction"] != after["prediction"]
    print(f"browser test took {time.monotonic() - started:.1f} s")
