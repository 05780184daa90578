"""Importing someone's embeddings as a cache: inputs, provenance, reuse, no heads."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mrl_analysis.cache.importer import import_embeddings
from mrl_analysis.cache.reader import HeadlessCacheError, open_cache
from mrl_analysis.cache.store import sha256_file
from mrl_analysis.core.checks import NonFiniteError

N, D, C = 60, 24, 3
NAMES = ["cat", "dog", "owl"]


def _arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(N) % C
    x = (rng.normal(size=(N, D)) + 3 * np.eye(C, D)[labels]).astype(np.float32)
    return x, labels


@pytest.fixture
def files(tmp_path):
    x, y = _arrays()
    np.save(tmp_path / "emb.npy", x)
    np.save(tmp_path / "labels.npy", y)
    (tmp_path / "classes.txt").write_text("\n".join(NAMES) + "\n")
    (tmp_path / "super.json").write_text(json.dumps({"cat": "mammal", "dog": "mammal"}))
    return tmp_path


def test_npy_files_become_a_verified_headless_cache(files):
    out = files / "imported"
    caches = import_embeddings(
        files / "emb.npy",
        files / "labels.npy",
        out,
        class_names=files / "classes.txt",
        superclasses=files / "super.json",
        sample_ids=[f"img{i:03d}" for i in range(N)],
        split="val",
        dataset="toy",
    )
    assert list(caches) == ["val"]
    cache = caches["val"]
    assert cache.path == out / "val"
    x, y = _arrays()
    np.testing.assert_array_equal(cache.features(), x)  # float32: stored exactly
    np.testing.assert_array_equal(cache.labels, y)
    assert cache.class_names == NAMES and cache.class_ids == NAMES
    assert cache.hierarchy == {"cat": "mammal", "dog": "mammal"}
    assert cache.sample_ids[:2] == ["img000", "img001"]
    assert cache.kind == "mrl" and cache.nesting == [1, 2, 4, 8, 16, 24]
    assert cache.num_classes == C and not cache.has_heads
    cache.verify()
    reopened = open_cache(out / "val")
    inputs = reopened.manifest["provenance"]["inputs"]
    assert inputs["features"] == sha256_file(files / "emb.npy")
    assert inputs["labels"] == sha256_file(files / "labels.npy")
    assert inputs["class_names"] == sha256_file(files / "classes.txt")
    assert reopened.manifest["sources"]["features"] == str((files / "emb.npy").resolve())
    assert reopened.manifest["model"]["heads"] is False
    assert reopened.manifest["dataset"]["name"] == "toy"
    # Logit-based analyses refuse it with the reason and what does work.
    for ask in (cache.logits, cache.predictions, cache.probabilities, lambda: cache.logits_at(8)):
        with pytest.raises(HeadlessCacheError, match="no classifier heads.*k-NN, few-shot"):
            ask()
    # ... and so do the analyses built on logits, with the same sentence.
    from mrl_analysis.accuracy.study import linear_table
    from mrl_analysis.cache.scores import score_sets

    for analysis in (lambda: linear_table({"X": cache}), lambda: score_sets({"X": cache})):
        with pytest.raises(HeadlessCacheError, match="imported from features alone"):
            analysis()


def test_reimport_reuses_and_changed_inputs_replace(files):
    first = import_embeddings(files / "emb.npy", files / "labels.npy", files / "out")["test"]
    again = import_embeddings(files / "emb.npy", files / "labels.npy", files / "out")["test"]
    assert again.manifest["build_id"] == first.manifest["build_id"]
    x, _ = _arrays(seed=1)
    np.save(files / "emb.npy", x)
    changed = import_embeddings(files / "emb.npy", files / "labels.npy", files / "out")["test"]
    assert changed.manifest["key"] != first.manifest["key"]
    np.testing.assert_array_equal(changed.features(), x)
    assert not [p for p in (files / "out").iterdir() if ".tmp-" in p.name]


def test_in_memory_arrays_string_labels_and_class_order(tmp_path):
    x, y = _arrays()
    text = np.asarray(NAMES)[y]
    caches = import_embeddings(x, text, tmp_path / "a", kind="ff")
    cache = caches["test"]
    assert cache.class_names == sorted(NAMES)  # from the names, sorted
    np.testing.assert_array_equal(np.asarray(cache.class_names)[cache.labels], text)
    assert cache.kind == "ff" and cache.nesting == [D]
    assert len(cache.manifest["provenance"]["inputs"]["features"]) == 64
    ordered = import_embeddings(
        x, list(text), tmp_path / "b", class_names=NAMES, superclasses={"owl": "bird"}
    )["test"]
    np.testing.assert_array_equal(ordered.labels, y)
    assert ordered.hierarchy == {"owl": "bird"}
    by_index = import_embeddings(x, y, tmp_path / "d", superclasses={0: "a", 1: "a", 2: "b"})
    assert by_index["test"].hierarchy == {"0": "a", "1": "a", "2": "b"}
    with pytest.raises(ValueError, match="superclasses name none of the classes"):
        import_embeddings(x, y, tmp_path / "e", superclasses={"zebra": "a"})
    with pytest.raises(ValueError, match=r"labels \['eel'\] are not among the class names"):
        import_embeddings(x, np.where(y == 0, "eel", text), tmp_path / "c", class_names=NAMES)


def test_query_database_split(tmp_path):
    x, y = _arrays()
    caches = import_embeddings(x, y, tmp_path / "q", query=0.25, seed=3)
    assert set(caches) == {"query", "database"}
    q, db = caches["query"], caches["database"]
    assert np.bincount(q.labels).tolist() == [5, 5, 5]  # a quarter of each class of 20
    assert len(q) + len(db) == N
    assert not set(q.sample_ids) & set(db.sample_ids)
    rows = np.array([int(s.split("/")[1]) for s in q.sample_ids])
    np.testing.assert_array_equal(q.features(), x[rows])
    assert q.manifest["provenance"]["part"] == "query"
    mask = np.zeros(N, dtype=bool)
    mask[[0, 4, 8]] = True
    np.save(tmp_path / "mask.npy", mask)
    by_file = import_embeddings(x, y, tmp_path / "m", query=tmp_path / "mask.npy")
    assert by_file["query"].sample_ids == ["index/0", "index/4", "index/8"]
    by_rows = import_embeddings(x, y, tmp_path / "r", query=[0, 4, 8])
    np.testing.assert_array_equal(by_rows["query"].features(), x[[0, 4, 8]])
    with pytest.raises(ValueError, match="both sides"):
        import_embeddings(x, y, tmp_path / "e", query=np.ones(N, dtype=bool))


def test_safetensors_with_labels_inside(tmp_path):
    from safetensors.numpy import save_file

    x, y = _arrays()
    save_file({"embeddings": x, "labels": y}, tmp_path / "emb.safetensors")
    cache = import_embeddings(tmp_path / "emb.safetensors", None, tmp_path / "s")["test"]
    np.testing.assert_array_equal(cache.features(), x)
    np.testing.assert_array_equal(cache.labels, y)
    assert cache.manifest["provenance"]["inputs"]["features"] == sha256_file(
        tmp_path / "emb.safetensors"
    )
    with pytest.raises(ValueError, match="no labels"):
        import_embeddings(x, None, tmp_path / "n")


def test_parquet_table_with_a_vector_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    x, y = _arrays()
    table = pa.table(
        {
            "embedding": pa.array(list(x), type=pa.list_(pa.float32())),
            "label": np.asarray(NAMES)[y],
            "id": [f"doc-{i}" for i in range(N)],
        }
    )
    pq.write_table(table, tmp_path / "emb.parquet")
    cache = import_embeddings(tmp_path / "emb.parquet", None, tmp_path / "p", class_names=NAMES)[
        "test"
    ]
    np.testing.assert_array_equal(cache.features(), x)
    np.testing.assert_array_equal(cache.labels, y)
    assert cache.sample_ids[:2] == ["doc-0", "doc-1"]


def test_bad_inputs_get_one_clear_error(files):
    x, y = _arrays()
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(NonFiniteError, match="features holds 1 non-finite"):
        import_embeddings(bad, y, files / "bad")
    np.save(files / "bad.npy", bad)
    with pytest.raises(NonFiniteError, match="features in bad.npy holds 1"):
        import_embeddings(files / "bad.npy", y, files / "bad")
    with pytest.raises(TypeError, match="float labels are refused"):
        import_embeddings(x, y.astype(float), files / "bad")
    with pytest.raises(ValueError, match="one label per feature row"):
        import_embeddings(x, y[:-1], files / "bad")
    with pytest.raises(ValueError, match="class_names lists 2 classes"):
        import_embeddings(x, y, files / "bad", class_names=["a", "b"])
    with pytest.raises(FileNotFoundError, match="features file .*missing.npy.* not found"):
        import_embeddings(files / "missing.npy", y, files / "bad")
    with pytest.raises(ValueError, match="kind"):
        import_embeddings(x, y, files / "bad", kind="mrl-e")
    with pytest.raises(ValueError, match="nesting goes up to 32"):
        import_embeddings(x, y, files / "bad", nesting=[8, 32])
    with pytest.raises(ValueError, match="strictly increasing"):
        import_embeddings(x, y, files / "bad", nesting=[16, 4, 4])
    with pytest.raises(ValueError, match="distinct"):
        import_embeddings(x, y, files / "bad", sample_ids=["same"] * N)
    assert not (files / "bad").exists()


def test_never_replaces_a_folder_that_is_not_a_cache(tmp_path):
    x, y = _arrays()
    mine = tmp_path / "out" / "test"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my own file")
    with pytest.raises(ValueError, match="not an embedding cache"):
        import_embeddings(x, y, tmp_path / "out")
    assert (mine / "notes.txt").read_text() == "my own file"


def test_cli_import_writes_the_caches_and_reports_errors_in_one_line(files, capsys):
    from mrl_analysis.app.cli import main

    argv = ["import", str(files / "emb.npy"), "--labels", str(files / "labels.npy")]
    assert main([*argv, "-o", str(files / "cli"), "--query", "0.1", "--kind", "ff"]) == 0
    out = capsys.readouterr().out
    assert f"query: {files / 'cli' / 'query'} (6 samples, d = {D}" in out
    database = open_cache(files / "cli" / "database")
    assert database.kind == "ff" and len(database) == N - 6
    assert main([*argv, "-o", str(files / "cli2"), "--nesting", "4,x"]) == 2
    assert "--nesting takes comma-separated sizes" in capsys.readouterr().err
    assert main([*argv, "-o", str(files / "cli2"), "--nesting", "4,8", "--split", "dev"]) == 0
    assert open_cache(files / "cli2" / "dev").nesting == [4, 8]


# --------------------------------------------------------------------------- real data

#: The demo's caches (``make demo``); ``$MRL_DEMO_CACHE`` points elsewhere (e.g. a copy).
DEMO_CACHE = Path(
    os.environ.get("MRL_DEMO_CACHE", Path(__file__).resolve().parents[2] / "data" / "cache")
)


def _subset(cache, n):
    """The first ``n`` samples of a real cache, as the reader's own view type."""
    from mrl_analysis.cache.reader import EmbeddingCache

    per_sample = {"features", "labels", "sample_ids"}
    arrays = {
        name: array[:n] if name in per_sample else array for name, array in cache._arrays.items()
    }
    arrays["logits"] = cache._arrays["logits"][:, :n]
    return EmbeddingCache(cache.path, cache.manifest, arrays)


@pytest.mark.integration
def test_exported_demo_caches_import_to_the_same_knn_and_retrieval_tables(tmp_path):
    from mrl_analysis.accuracy.study import knn_table
    from mrl_analysis.retrieval.study import evaluate_models

    if not (DEMO_CACHE / "MRL" / "fashion-mnist-test" / "manifest.json").is_file():
        pytest.skip("the demo's caches are not built (make demo)")
    originals = {"test": {}, "train": {}}
    imported = {"test": {}, "train": {}}
    for name in ("MRL", "FF-512"):
        for split, n in (("test", 500), ("train", 4000)):
            cache = _subset(open_cache(DEMO_CACHE / name / f"fashion-mnist-{split}"), n)
            originals[split][name] = cache
            folder = tmp_path / "export" / name / split
            folder.mkdir(parents=True)
            x, y = cache.features(), np.asarray(cache.labels)
            if name == "FF-512" and importlib.util.find_spec("pyarrow"):
                import pyarrow as pa
                import pyarrow.parquet as pq

                source = folder / "embeddings.parquet"
                pq.write_table(
                    pa.table(
                        {"embedding": pa.array(list(x), type=pa.list_(pa.float32())), "label": y}
                    ),
                    source,
                )
                labels = None
            else:
                source, labels = folder / "features.npy", folder / "labels.npy"
                np.save(source, x)
                np.save(labels, y)
            kind = "ff" if cache.kind == "ff" else "mrl"
            imported[split][name] = import_embeddings(
                source,
                labels,
                tmp_path / "imported" / name,
                kind=kind,
                nesting=cache.nesting,
                class_names=cache.class_names,
                split=split,
            )[split]
    want = knn_table(originals["test"], originals["train"], k=(1, 5))
    got = knn_table(imported["test"], imported["train"], k=(1, 5))
    pd.testing.assert_frame_equal(got, want)
    assert set(got["model"]) == {"MRL", "FF-512"} and len(got) > 10
    want = evaluate_models(originals["train"], originals["test"], progress=False).table
    got = evaluate_models(imported["train"], imported["test"], progress=False).table
    timing = ["ms_per_query"]  # measured wall time, the one column that may differ
    pd.testing.assert_frame_equal(got.drop(columns=timing), want.drop(columns=timing))


def test_feature_based_analyses_run_on_an_imported_cache(files):
    from mrl_analysis.fewshot.study import FewshotSpec, FluidSpec, fewshot_table, fluid_study

    x, y = _arrays()
    caches = import_embeddings(x, y, files / "fs", query=0.5, class_names=NAMES)
    evals, trains = {"X": caches["query"]}, {"X": caches["database"]}
    spec = FewshotSpec(shots=(1,), ways=(2,), n_episodes=5, queries=3, min_dim=2, n_boot=20)
    table = fewshot_table(evals, spec, progress=False)
    assert sorted(table["truncate_dim"]) == [2, 4, 8, 16, 24]
    study = fluid_study(
        evals, trains, [0, 1], [2], FluidSpec(head_threshold=0.2, n_boot=20), progress=False
    )
    assert set(study.accuracy["truncate_dim"]) == {1, 2, 4, 8, 16, 24}
    assert study.classes["name"].tolist() == NAMES
