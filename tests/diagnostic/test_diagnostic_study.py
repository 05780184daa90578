"""The diagnostic over caches: imported ones (features only) and the study's rules."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hand_caches import hand_cache

from mrl_analysis.cache.importer import import_embeddings
from mrl_analysis.diagnostic.headlines import (
    MATRYOSHKA,
    NOT_NESTED,
    PCA_FIRST,
    comparison_row,
)
from mrl_analysis.diagnostic.study import (
    default_models,
    diagnose,
    diagnostic_sizes,
    imported_caches,
    trained_dim,
)

D, K, N = 32, 5, 1200


def _features(kind: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.arange(N) % K
    x = rng.normal(size=(N, D))
    x[:, :4] += np.random.default_rng(99).normal(size=(K, 4))[labels] * 3
    if kind == "rotated":
        x = x @ np.linalg.qr(np.random.default_rng(7).normal(size=(D, D)))[0]
    return x.astype(np.float32), labels


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("imported")
    out = {}
    for name, kind, cache_kind in (("nested", "nested", "mrl"), ("rotated", "rotated", "ff")):
        x, y = _features(kind)
        import_embeddings(x, y, root / name, kind=cache_kind, query=0.2, seed=1)
        out[name] = root / name
    return out


def test_imported_caches_get_a_verdict_each(folders):
    queries, databases = imported_caches(folders)
    assert not queries["nested"].has_heads
    result = diagnose(queries, databases, n_queries=None, small_max=8, n_boot=300, progress=False)
    verdict = result.verdicts.set_index("model")["verdict"]
    assert verdict["nested"] == MATRYOSHKA and verdict["rotated"] == PCA_FIRST
    setup = result.setup.set_index("model")
    assert setup.loc["nested", "sizes"] == [2, 4, 8, 16, 32]
    assert (
        setup.loc["nested", "queries"] == N // 5 and setup.loc["nested", "database"] == N - N // 5
    )
    assert set(result.quality["model"]) == {"nested", "rotated"}
    assert set(result.shares["model"]) == {"nested", "rotated"}
    assert set(result.details) == {"nested", "rotated"}
    # Gaussian features are never all zero: no note on empty prefixes.
    assert (result.verdicts["empty_smallest"] == 0).all()
    assert "all zero" not in " ".join(result.verdicts["text"])


def test_nested_prefixes_are_compared_with_the_other_embeddings_prefixes_and_pca(folders):
    queries, databases = imported_caches(folders)
    result = diagnose(queries, databases, n_queries=None, small_max=8, n_boot=300, progress=False)
    (row,) = result.comparisons.to_dict("records")  # only the nested model is compared
    assert (row["model"], row["reference"], row["small_max"]) == ("nested", "rotated", 8)
    # The rotated embedding spreads the signal over all dims: its first dims lose, its PCA
    # dims recover what the nested model's first dims hold.
    assert row["vs_prefix_low"] > 0.4 and abs(row["vs_pca"]) < 0.05
    nested = result.details["nested"].series("prefix", "map", [2, 4, 8]).mean
    rotated = result.details["rotated"].series("prefix", "map", [2, 4, 8]).mean
    assert row["vs_prefix"] == pytest.approx((nested - rotated).mean())
    assert row["text"].startswith(
        "nested vs rotated: at m ≤ 8, nested's first m dims beat rotated's first m dims (+"
    )
    other = diagnose(queries, databases, n_queries=100, n_boot=50, progress=False)
    with pytest.raises(ValueError, match="not bootstrapped over the same queries"):
        comparison_row("nested", result.details["nested"], "x", other.details["rotated"])


def test_dead_leading_units_are_named_in_the_verdict(tmp_path):
    x, y = _features("nested")
    x = np.maximum(x, 0)
    x[:, 0] = 0  # a dead ReLU unit
    x[: N // 2, 1] = 0
    import_embeddings(x, y, tmp_path / "relu", query=0.2)
    queries, databases = imported_caches({"relu": tmp_path / "relu"})
    result = diagnose(queries, databases, n_queries=None, small_max=8, n_boot=100, progress=False)
    share = result.verdicts["empty_smallest"].iat[0]
    assert 0.4 < share < 0.8
    assert (
        f"{100 * share:.0f}% of the m = 2 prefixes are all zero" in result.verdicts["text"].iat[0]
    )


def test_models_are_compared_on_the_same_sampled_rows(folders):
    queries, databases = imported_caches(folders)
    a = diagnose(queries, databases, n_queries=50, n_database=300, n_boot=50, progress=False)
    b = diagnose(
        {"nested": queries["nested"]},
        {"nested": databases["nested"]},
        n_queries=50,
        n_database=300,
        n_boot=50,
        progress=False,
    )
    first = a.quality[a.quality["model"] == "nested"].reset_index(drop=True)
    np.testing.assert_allclose(first["value"], b.quality["value"])
    assert a.setup["queries"].tolist() == [50, 50]


def test_model_choice_sizes_and_mismatches(folders, tmp_path):
    queries, databases = imported_caches(folders)
    assert default_models(queries) == ["nested", "rotated"]  # an FF of full size counts
    assert diagnostic_sizes(queries["rotated"]) == [2, 4, 8, 16, 32]
    assert diagnostic_sizes(queries["rotated"], min_dim=8) == [8, 16, 32]
    x, y = _features("nested")
    other = import_embeddings(x[:500], y[:500], tmp_path / "other", query=0.2)
    with pytest.raises(ValueError, match="hold different samples"):
        diagnose({**queries, "other": other["query"]}, {**databases, "other": other["database"]})
    with pytest.raises(ValueError, match=r"models \['nope'\] need both"):
        diagnose(queries, databases, models=["nope"])


def test_dims_no_head_reads_are_not_part_of_the_embedding():
    """A backbone wider than the nesting (1024 features, heads up to 16 here): the
    diagnosis stops at the heads' width, and the widest FF model counts as full-size."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    wide = rng.normal(size=(200, 64)).astype(np.float32)
    logits = np.zeros((5, 200, 3), np.float32)
    caches = {
        "MRL": hand_cache("mrl", [1, 2, 4, 8, 16], logits, labels, features=wide),
        "FF-16": hand_cache("ff", [16], logits[:1], labels, features=wide),
        "FF-4": hand_cache("ff", [4], logits[:1], labels, features=wide),
    }
    assert [trained_dim(c) for c in caches.values()] == [16, 16, 4]
    assert default_models(caches) == ["MRL", "FF-16"]
    assert diagnostic_sizes(caches["FF-16"]) == [2, 4, 8, 16]
    result = diagnose(caches, caches, n_queries=50, n_boot=20, n_random=2, progress=False)
    assert result.setup["dim"].tolist() == [16, 16]
    assert result.quality["truncate_dim"].max() == 16


#: The demo's caches (``make demo``); ``$MRL_DEMO_CACHE`` points elsewhere (e.g. a copy).
DEMO_CACHE = Path(
    os.environ.get("MRL_DEMO_CACHE", Path(__file__).resolve().parents[2] / "data" / "cache")
)


@pytest.mark.integration
def test_an_exported_and_imported_demo_model_gets_the_same_diagnosis(tmp_path):
    from mrl_analysis.cache.reader import open_cache

    if not (DEMO_CACHE / "MRL" / "fashion-mnist-test" / "manifest.json").is_file():
        pytest.skip("the demo's caches are not built (make demo)")
    queries = {"MRL": open_cache(DEMO_CACHE / "MRL" / "fashion-mnist-test")}
    databases = {"MRL": open_cache(DEMO_CACHE / "MRL" / "fashion-mnist-train")}
    for part, cache in (("query", queries["MRL"]), ("database", databases["MRL"])):
        np.save(tmp_path / f"{part}.npy", cache.features())
        np.save(tmp_path / f"{part}-labels.npy", np.asarray(cache.labels))
        import_embeddings(
            tmp_path / f"{part}.npy",
            tmp_path / f"{part}-labels.npy",
            tmp_path / "imported",
            nesting=cache.nesting,
            split=part,
        )
    imported = {"MRL": open_cache(tmp_path / "imported" / "query")}
    imported_db = {"MRL": open_cache(tmp_path / "imported" / "database")}
    settings = {"n_queries": 300, "n_database": 3000, "n_boot": 200, "progress": False}
    want = diagnose(queries, databases, **settings)
    got = diagnose(imported, imported_db, **settings)
    pd.testing.assert_frame_equal(got.quality, want.quality)
    pd.testing.assert_frame_equal(got.verdicts, want.verdicts)
    assert want.verdicts["verdict"].iat[0] in (MATRYOSHKA, PCA_FIRST, NOT_NESTED)
    assert got.setup["heads"].tolist() == [False] and want.setup["heads"].tolist() == [True]
