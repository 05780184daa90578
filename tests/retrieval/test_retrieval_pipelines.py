"""The frontier's search structures against brute force: AdANNS-IVF, int8 and binary
prefixes, HNSW variants and faiss-native peers; and the bytes-per-vector arithmetic."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
from retrieval_helpers import normalize, numpy_ranking

from mrl_analysis.retrieval.index import Retriever, index_bytes
from mrl_analysis.retrieval.plan import IndexSpec, PeerSpec, Pipeline
from mrl_analysis.retrieval.synthetic import synthetic_nested

N, DIM = 3000, 32


@pytest.fixture(scope="module")
def data():
    return synthetic_nested(N, 80, dim=DIM, num_classes=12, noise=1.0, seed=5)


@pytest.fixture(scope="module")
def retriever(data):
    return Retriever(data[0], data[1])


def _recall(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    return float(
        np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(found, truth, strict=True)])
    )


def test_ivf_assigns_each_vector_to_its_nearest_centroid_on_the_first_dc_dims(retriever):
    spec = IndexSpec("ivf", nlist=16, coarse_dim=4)
    ivf = retriever.shortlist_index(16, spec).index
    quantizer = faiss.downcast_index(ivf.quantizer)
    assert isinstance(quantizer, faiss.IndexPreTransform) and quantizer.d == 16
    centroids = faiss.downcast_index(quantizer.index).reconstruct_n(0, 16)
    assert centroids.shape == (16, 4)  # learned at Dc, not at Ds
    x = normalize(retriever.database[:, :16])[:, :4]
    nearest = ((x[:, None, :] - centroids[None]) ** 2).sum(-1).argmin(1)
    lists = np.full(N, -1)
    for j in range(ivf.nlist):
        ids = faiss.rev_swig_ptr(ivf.invlists.get_ids(j), ivf.invlists.list_size(j))
        lists[np.asarray(ids)] = j
    assert (lists >= 0).all()
    # float32 vs float64 distances may flip a near-tie; all others match exactly.
    assert (lists == nearest).mean() >= 0.995


def test_ivf_probing_every_list_is_exact_and_recall_grows_with_nprobe(data, retriever):
    _, _, queries, _ = data
    exact = numpy_ranking(queries, retriever.database, 16)[:, :50]
    full = IndexSpec("ivf", nlist=16, nprobe=16, coarse_dim=4)
    np.testing.assert_array_equal(retriever.search(queries, 16, 50, full), exact)
    recalls = [
        _recall(retriever.search(queries, 16, 10, IndexSpec("ivf", nlist=16, nprobe=p)), exact, 10)
        for p in (1, 4, 16)
    ]
    assert recalls[0] < recalls[1] < recalls[2] == 1.0
    assert recalls[1] >= 0.8  # stated bound: 4 of 16 lists hold most of the top 10


def test_ivf_pipeline_with_every_list_probed_equals_exact_adaptive(data, retriever):
    _, _, queries, _ = data
    spec = IndexSpec("ivf", nlist=16, nprobe=16, coarse_dim=8)
    got = retriever.pipeline(queries, Pipeline(16, None, 100, spec))
    np.testing.assert_array_equal(got, retriever.adaptive(queries, 16, None, 100))
    exact = Pipeline(16, 32, 100)
    np.testing.assert_array_equal(
        retriever.pipeline(queries, exact), retriever.adaptive(queries, 16, 32, 100)
    )


def test_int8_search_is_exact_on_the_decoded_codes(data, retriever):
    _, _, queries, _ = data
    built = retriever.shortlist_index(16, IndexSpec(codec="int8"))
    decoded = built.index.reconstruct_n(0, N).astype(np.float64)
    q = normalize(queries[:, :16])
    dist = (q * q).sum(1)[:, None] + (decoded * decoded).sum(1)[None] - 2 * q @ decoded.T
    found = retriever.search(queries, 16, 20, IndexSpec(codec="int8"))
    np.testing.assert_allclose(
        np.take_along_axis(dist, found, 1), np.sort(dist, 1)[:, :20], rtol=1e-4, atol=1e-5
    )
    exact = numpy_ranking(queries, retriever.database, 16)
    assert _recall(found, exact, 10) >= 0.9  # stated bound: 8 bits barely move the top 10
    # IVF-int8 probing every list stores the same codes (no residuals): same ranking.
    ivf = IndexSpec("ivf", "int8", nlist=16, nprobe=16)
    np.testing.assert_array_equal(retriever.search(queries, 16, 20, ivf), found)


def test_binary_search_is_exact_in_hamming_distance(data, retriever):
    _, _, queries, _ = data
    spec = IndexSpec(codec="binary")
    built = retriever.shortlist_index(32, spec)
    x = normalize(retriever.database)
    np.testing.assert_allclose(built.threshold, x.mean(0), atol=1e-6)  # bits around the mean
    bits = x > built.threshold
    qbits = normalize(queries) > built.threshold
    hamming = (qbits[:, None, :] != bits[None]).sum(-1)
    found = retriever.search(queries, 32, 30, spec)
    # Hamming distances tie often: compare the distances found, not the ids.
    np.testing.assert_array_equal(
        np.take_along_axis(hamming, found, 1), np.sort(hamming, 1)[:, :30]
    )
    with pytest.raises(ValueError, match="multiple of 8"):
        retriever.search(queries, 12, 5, spec)
    # Reranked in float32 at full size, a binary shortlist of 10% of the database recovers
    # most exact neighbours (stated bound; 32 bits are a coarse sketch).
    exact = numpy_ranking(queries, retriever.database, DIM)
    reranked = retriever.pipeline(queries, Pipeline(32, None, 300, spec))
    assert _recall(reranked, exact, 10) >= 0.8


def test_hnsw_variants_reach_stated_recall(data, retriever):
    _, _, queries, _ = data
    exact = numpy_ranking(queries, retriever.database, 16)
    for codec, bound in (("float32", 0.95), ("int8", 0.9)):
        spec = IndexSpec("hnsw", codec, hnsw_m=16, ef_search=64)
        assert _recall(retriever.search(queries, 16, 10, spec), exact, 10) >= bound, codec
    # Binary HNSW against exact Hamming search: ties are many, so count the results whose
    # distance is within the 10th smallest.
    spec = IndexSpec("hnsw", "binary", hnsw_m=16, ef_search=64)
    threshold = retriever.shortlist_index(16, spec).threshold
    bits = normalize(retriever.database[:, :16]) > threshold
    hamming = ((normalize(queries[:, :16]) > threshold)[:, None, :] != bits[None]).sum(-1)
    found = np.take_along_axis(hamming, retriever.search(queries, 16, 10, spec), 1)
    assert (found <= np.sort(hamming, 1)[:, 9:10]).mean() >= 0.95


def test_faiss_peers_reach_stated_recall_against_full_size_neighbours(data, retriever):
    _, _, queries, _ = data
    exact = numpy_ranking(queries, retriever.database, DIM)
    peers = {
        PeerSpec("HNSW16,Flat", "efSearch=64"): 0.95,
        PeerSpec("IVF16,PQ8x4np,RFlat", "nprobe=16,k_factor_rf=16"): 0.95,
        PeerSpec("HNSW16,SQ8,RFlat", "efSearch=64,k_factor_rf=4"): 0.95,
    }
    for peer, bound in peers.items():
        assert _recall(retriever.peer(queries, peer, 10), exact, 10) >= bound, peer.label
    coarse = retriever.peer(queries, PeerSpec("IVF16,PQ8x4np,RFlat", "nprobe=1,k_factor_rf=1"), 10)
    assert _recall(coarse, exact, 10) < 0.95  # the search settings reach the index


def test_bytes_per_vector_arithmetic():
    database, labels, _, _ = synthetic_nested(2000, 1, dim=64, num_classes=4, seed=0)
    r = Retriever(database, labels)
    n = len(database)
    assert r.stored_bytes(16) == 64 and r.stored_bytes(None) == 256  # 4 bytes a dim
    assert r.stored_bytes(32, IndexSpec(codec="int8")) == 32  # 1 byte a dim
    assert r.stored_bytes(32, IndexSpec(codec="binary")) == 4  # 1 bit a dim
    ivf = IndexSpec("ivf", nlist=8, coarse_dim=8)
    # codes + an 8-byte id per vector + the 8 centroids at Dc=8 spread over N.
    assert r.stored_bytes(32, ivf) == pytest.approx(4 * 32 + 8 + 8 * 8 * 4 / n)
    ivf8 = IndexSpec("ivf", "int8", nlist=8, coarse_dim=8)
    assert r.stored_bytes(32, ivf8) == pytest.approx(32 + 8 + 8 * 8 * 4 / n)
    hnsw = r.shortlist_index(16, IndexSpec("hnsw", hnsw_m=8)).index.hnsw
    links = (4 * hnsw.neighbors.size() + 8 * hnsw.offsets.size() + 4 * hnsw.levels.size()) / n
    assert r.stored_bytes(16, IndexSpec("hnsw", hnsw_m=8)) == pytest.approx(64 + links)
    assert links >= 4 * 2 * 8  # level 0 keeps 2·M links of 4 bytes per vector
    # A two-stage pipeline keeps its shortlist structure and a float32 rerank copy.
    assert r.pipeline_bytes(16, (64,)) == 64 + 256
    assert r.pipeline_bytes(16, (16,)) == 64  # an exact shortlist is its own rerank copy
    assert r.pipeline_bytes(32, (32,), IndexSpec(codec="int8")) == 32 + 128
    assert r.pipeline_bytes(16, (32, 64, 64)) == 64 + 128 + 256  # funnel stages, once each
    peer = PeerSpec("IVF8,PQ16x4np,RFlat")
    # The refine's float32 copy + 16 half-byte PQ codes (8 bytes) + id + centroids at 64.
    assert r.peer_bytes(peer) == pytest.approx(256 + 8 + 8 + 8 * 64 * 4 / n)
    assert index_bytes(faiss.IndexFlatL2(64)) == 0


def test_full_size_peers_copy_a_normalized_database_once(data):
    database = normalize(data[0]).astype(np.float32)
    r = Retriever(database, data[1])
    peer = PeerSpec("HNSW16,Flat", "efSearch=32")
    r.prepare_peer(peer)
    assert np.shares_memory(r.vectors(None), database)  # the rerank store is the database
    built = r.index_table().set_index("structure")
    assert built.loc["flat", "memory_mb"] == 0
    # The peer's index holds the one copy: N·d floats plus its graph, nothing more.
    same = faiss.IndexHNSWFlat(DIM, 16)  # faiss draws levels from a fixed seed: same graph
    same.add(database)
    graph = same.hnsw
    links = 4 * graph.neighbors.size() + 8 * graph.offsets.size() + 4 * graph.levels.size()
    assert built.loc["faiss", "memory_mb"] * 2**20 == N * DIM * 4 + links
    r.release()
    assert r.index_table().shape[0] == built.shape[0]  # records survive a release
