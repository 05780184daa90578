"""Search structures: flat search and reranking against numpy, AR / funnel identities, HNSW,
the index spec, and the synthetic test data."""

from __future__ import annotations

from dataclasses import replace

import faiss
import numpy as np
import pytest
from retrieval_helpers import normalize, numpy_ranking

from mrl_analysis.core.checks import NonFiniteError
from mrl_analysis.retrieval.index import IndexSpec, Retriever, build_index
from mrl_analysis.retrieval.plan import Funnel, PeerSpec, Pipeline
from mrl_analysis.retrieval.synthetic import synthetic_nested


@pytest.fixture(scope="module")
def data():
    return synthetic_nested(1500, 60, dim=32, num_classes=12, noise=1.2, seed=3)


def test_flat_search_matches_numpy_brute_force(data):
    database, _, queries, _ = data
    retriever = Retriever(database)
    for m in (4, 11, 32):
        expected = numpy_ranking(queries, database, m)[:, :20]
        np.testing.assert_array_equal(retriever.search(queries, m, 20), expected)


def test_small_query_batches_give_the_same_ranking(data):
    database, _, queries, _ = data
    whole = Retriever(database).search(queries, 8, 10)
    batched = Retriever(database, index=IndexSpec(batch_size=7))
    np.testing.assert_array_equal(batched.search(queries, 8, 10), whole)
    np.testing.assert_array_equal(
        batched.rerank(queries, whole, 32), Retriever(database).rerank(queries, whole, 32)
    )


def test_rerank_matches_numpy_and_puts_missing_last(data):
    database, _, queries, _ = data
    rng = np.random.default_rng(0)
    candidates = np.stack([rng.permutation(len(database))[:30] for _ in queries])
    candidates[:, 5] = -1
    reranked = Retriever(database).rerank(queries, candidates, 16)
    assert (reranked[:, -1] == -1).all()
    q, db = normalize(queries[:, :16]), normalize(database[:, :16])
    for row, cand in zip(range(len(queries)), candidates, strict=True):
        ids = cand[cand >= 0]
        order = np.argsort(((db[ids] - q[row]) ** 2).sum(1), kind="stable")
        np.testing.assert_array_equal(reranked[row, :-1], ids[order])


def test_adaptive_at_full_size_equals_single_shot(data):
    database, labels, queries, _ = data
    retriever = Retriever(database, labels)
    single = retriever.search(queries, None, 50)
    np.testing.assert_array_equal(retriever.adaptive(queries, 32, 32, 50), single)
    np.testing.assert_array_equal(retriever.adaptive(queries, None, None, 50), single)


def test_funnel_with_one_stage_equals_adaptive(data):
    database, _, queries, _ = data
    retriever = Retriever(database)
    adaptive = retriever.adaptive(queries, 4, 16, 100)
    funnel = retriever.funnel(queries, Funnel(4, (16,), (100,)))
    np.testing.assert_array_equal(funnel, adaptive)
    assert not np.array_equal(adaptive, retriever.search(queries, 4, 100))


def test_funnel_cascade_matches_a_numpy_cascade(data):
    database, _, queries, _ = data
    funnel = Funnel(4, (8, 16, 32), (80, 40, 10))
    got = Retriever(database).funnel(queries, funnel)
    ranking = numpy_ranking(queries, database, 4)[:, :80]
    for dim, keep in zip(funnel.rerank_dims, funnel.shortlist_sizes, strict=True):
        q, db = normalize(queries[:, :dim]), normalize(database[:, :dim])
        for row in range(len(queries)):
            head = ranking[row, :keep]
            ranking[row, :keep] = head[np.argsort(((db[head] - q[row]) ** 2).sum(1))]
    assert got.shape == (len(queries), 80)
    np.testing.assert_array_equal(got, ranking)


def test_hnsw_recall_against_exact_is_above_095():
    # Stated bound: HNSW32 (efSearch 64) finds >= 95% of the exact top-10 on 4000 items.
    database, labels, queries, _ = synthetic_nested(4000, 100, dim=32, num_classes=20, seed=1)
    exact = Retriever(database).search(queries, 16, 10)
    spec = IndexSpec("hnsw", hnsw_m=32, ef_search=64)
    hnsw = Retriever(database, index=spec)
    approx = hnsw.search(queries, 16, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95
    built = hnsw.index_table().set_index("structure")
    assert built.loc["hnsw", "truncate_dim"] == 16
    assert built.loc["hnsw", "memory_mb"] > 4000 * 16 * 4 / 2**20  # vectors plus the graph


def test_index_spec_reaches_the_index_builder():
    vectors = normalize(np.random.default_rng(0).standard_normal((300, 8))).astype(np.float32)
    index = build_index(vectors, IndexSpec("hnsw", hnsw_m=12, ef_construction=30)).index
    assert isinstance(index, faiss.IndexHNSWFlat) and index.ntotal == 300 and index.d == 8
    assert index.hnsw.efConstruction == 30
    assert index.hnsw.nb_neighbors(1) == 12  # M links per node above level 0
    with pytest.raises(ValueError, match="exact"):
        build_index(vectors, IndexSpec("flat"))


def test_index_spec_validates_and_threads_are_restored(data):
    with pytest.raises(ValueError, match="unknown index kind 'ivx'"):
        IndexSpec("ivx")
    with pytest.raises(ValueError, match="unknown codec 'int4'"):
        IndexSpec(codec="int4")
    with pytest.raises(ValueError, match="coarse_dim"):
        IndexSpec("hnsw", coarse_dim=8)
    with pytest.raises(ValueError, match="binary codec"):
        IndexSpec("ivf", "binary")
    with pytest.raises(ValueError, match="Dc=16 must be <= Ds=8"):
        IndexSpec("ivf", coarse_dim=16).coarse_size(8)
    with pytest.raises(TypeError, match="nprobe must be an integer"):
        IndexSpec("ivf", nprobe=4.0)
    with pytest.raises(ValueError, match="hnsw_m must lie in 1.."):
        IndexSpec("hnsw", hnsw_m=0)
    with pytest.raises(TypeError, match="ef_search must be an integer"):
        IndexSpec(ef_search=12.5)
    with pytest.raises(ValueError, match="threads"):
        IndexSpec(threads=0)
    with pytest.raises(TypeError, match="IndexSpec"):
        Retriever(data[0], index="hnsw")
    database, _, queries, _ = data
    before = faiss.omp_get_max_threads()
    retriever = Retriever(database, index=IndexSpec(threads=1))
    single = retriever.search(queries, 8, 5)
    assert faiss.omp_get_max_threads() == before
    retriever.spec = replace(retriever.spec, threads=2)
    np.testing.assert_array_equal(retriever.search(queries, 8, 5), single)


def test_database_is_never_copied_and_full_size_copy_is_reused_when_normalized(data):
    database = data[0]
    retriever = Retriever(database)
    assert retriever.database is database
    before = database.copy()
    retriever.search(database[:5], None, 3)
    np.testing.assert_array_equal(database, before)  # normalization happened in a copy
    assert not np.shares_memory(retriever.vectors(None), database)

    normalized = synthetic_nested(200, 1, dim=16, num_classes=3, normalize=True)[0]
    np.testing.assert_allclose(np.linalg.norm(normalized, axis=1), 1, rtol=1e-5)
    r = Retriever(normalized)
    assert np.shares_memory(r.vectors(16), normalized)
    assert not np.shares_memory(r.vectors(8), normalized)
    assert r.vectors(8).shape == (200, 8) and r.vectors(8).flags.c_contiguous
    indexes = r.index_table().set_index("truncate_dim")
    assert indexes.loc[16, "shares_database"] and indexes.loc[16, "memory_mb"] == 0
    assert indexes.loc[8, "memory_mb"] == pytest.approx(200 * 8 * 4 / 2**20)


def test_retriever_rejects_bad_input(data):
    database, labels, queries, _ = data
    with pytest.raises(ValueError, match="truncate_dim"):
        Retriever(database).search(queries, 64, 5)
    with pytest.raises(ValueError, match="queries must be"):
        Retriever(database).search(queries[:, :8], 8, 5)
    with pytest.raises(ValueError, match="database size"):
        Retriever(database).search(queries, 8, len(database) + 1)
    with pytest.raises(ValueError, match="labels"):
        Retriever(database, labels[:-1])
    with pytest.raises(ValueError, match="2-D"):
        Retriever(database[0])
    with pytest.raises(ValueError, match="non-empty"):
        Retriever(database[:0])
    bad = database.copy()
    bad[3, 30] = np.nan  # beyond every size but the full one: still refused up front
    with pytest.raises(NonFiniteError, match="database holds 1 non-finite"):
        Retriever(bad)
    bad_queries = queries.copy()
    bad_queries[0, 0] = np.inf
    for call in (
        lambda r: r.search(bad_queries, 8, 5),
        lambda r: r.rerank(bad_queries, r.search(queries, 8, 5), 16),
        lambda r: r.pipeline(bad_queries, Pipeline(8, 16, 20, IndexSpec("ivf", nprobe=2))),
        lambda r: r.peer(bad_queries, PeerSpec("HNSW16,Flat"), 5),
    ):
        with pytest.raises(NonFiniteError, match="queries holds 1 non-finite"):
            call(Retriever(database))
    with pytest.raises(ValueError, match="non-increasing"):
        Funnel(8, (16, 32), (100, 200))
    with pytest.raises(ValueError, match="one shortlist length"):
        Funnel(8, (16, 32), (100,))
    with pytest.raises(ValueError, match="Ds must lie in 1.."):
        Funnel(0, (16,), (100,))


def test_synthetic_nested_is_deterministic_and_nested(data):
    a = synthetic_nested(100, 10, dim=16, num_classes=4, seed=7)
    b = synthetic_nested(100, 10, dim=16, num_classes=4, seed=7)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert a[0].dtype == np.float32 and a[0].shape == (100, 16) and a[2].shape == (10, 16)
    database = data[0]
    variance = database.var(axis=0)
    assert variance[0] > 5 * variance[-1]  # early dimensions dominate the geometry
    with pytest.raises(ValueError, match="num_classes"):
        synthetic_nested(10, 1, num_classes=0)
