"""The retrieval study over real caches of tiny models: query subsets, every kind of model."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from mrl_analysis.cache.build import embed_dataset
from mrl_analysis.models.network import build_model
from mrl_analysis.retrieval.index import Retriever
from mrl_analysis.retrieval.plan import IndexSpec, PeerSpec, Pipeline, RetrievalPlan
from mrl_analysis.retrieval.study import evaluate_models, query_subset
from mrl_analysis.retrieval.tables import TABLE_COLUMNS, single_shot_table


def test_query_subset_is_stratified_sorted_and_seeded():
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])
    rows = query_subset(labels, 50, seed=1)
    assert len(rows) == 50 and (np.diff(rows) > 0).all()
    np.testing.assert_array_equal(np.bincount(labels[rows]), [20, 15, 10, 5])
    np.testing.assert_array_equal(rows, query_subset(labels, 50, seed=1))
    assert not np.array_equal(rows, query_subset(labels, 50, seed=2))
    np.testing.assert_array_equal(query_subset(labels, None), np.arange(100))
    np.testing.assert_array_equal(query_subset(labels, 500), np.arange(100))
    assert len(query_subset(np.arange(10), 3)) == 3  # one row per class: uniform instead
    with pytest.raises(ValueError, match="n_queries"):
        query_subset(labels, 0)
    with pytest.raises(TypeError, match="n_queries"):
        query_subset(labels, 2.5)


def _bundle(templates: torch.Tensor, n: int, seed: int, split: str) -> SimpleNamespace:
    """Images = class template + noise, so nearest neighbours tend to share the class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(templates), (n,), generator=g)
    images = templates[labels] + 0.5 * torch.rand(n, 1, 28, 28, generator=g)
    return SimpleNamespace(
        dataset=TensorDataset(images, labels),
        targets=labels.numpy(),
        fingerprint=f"templates-{split}",
        split=split,
        class_names=[f"class {i}" for i in range(len(templates))],
    )


@pytest.fixture(scope="module")
def model_caches(tmp_path_factory):
    """Real caches of an (untrained) MRL and FF-8 model: train split 150, test split 40."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: extra threads only spin on a busy machine
    torch.manual_seed(0)
    templates = torch.rand(4, 1, 28, 28)
    models = {
        "MRL": build_model("resnet18", 4, "mrl", [2, 4, 8, 512], in_channels=1),
        "FF-8": build_model("resnet18", 4, "ff", ff_dim=8, in_channels=1),
    }
    splits = {
        "train": _bundle(templates, 150, 1, "train"),
        "test": _bundle(templates, 40, 2, "test"),
    }
    root = tmp_path_factory.mktemp("caches")
    caches = {
        split: {
            name: embed_dataset(model.eval(), bundle, root / name / split, progress=False)
            for name, model in models.items()
        }
        for split, bundle in splits.items()
    }
    torch.set_num_threads(before)
    return caches["train"], caches["test"]


def test_evaluate_models_runs_each_kind_as_documented(model_caches):
    databases, queries = model_caches
    plan = RetrievalPlan(ks=[5, 10], ablation_sizes=[20, 50], funnel_shortlists=[60, 30])
    study = evaluate_models(databases, queries, n_queries=30, min_dim=4, plan=plan, progress=False)
    table = study.table
    assert list(table.columns) == TABLE_COLUMNS
    mrl, ff = table[table["model"] == "MRL"], table[table["model"] == "FF-8"]
    assert set(mrl["method"]) == {"single-shot", "adaptive", "funnel", "shortlist-ablation"}
    assert sorted(mrl.loc[mrl["method"] == "single-shot", "Ds"].unique()) == [4, 8, 512]
    assert set(mrl.loc[mrl["method"] == "funnel", "cascade"]) == {
        "4 | 8→512 | 60→30",
        "8 | 512 | 60",
    }
    assert set(ff["method"]) == {"single-shot"} and set(ff["Ds"]) == {8}
    assert set(study.indexes["model"]) == {"MRL", "FF-8"}
    assert list(study.indexes.columns[:2]) == ["model", "structure"]
    models = study.models.set_index("model")
    assert models.loc["MRL", "sizes"] == [4, 8, 512] and models.loc["FF-8", "sizes"] == [8]
    assert list(models["queries"]) == [30, 30] and list(models["database_items"]) == [150, 150]
    assert list(models["query_items"]) == [40, 40] and list(models["kind"]) == ["mrl", "ff"]
    assert study.adaptive_models == ["MRL"]
    assert study.families == {"MRL": "MRL", "FF-8": "FF"}

    # FF-k is searched with its first k features, on the same query subset as every model.
    same = {"ks": plan.ks, "progress": False}
    rows = query_subset(queries["FF-8"].labels, 30, seed=0)
    retriever = Retriever(databases["FF-8"].features(8), databases["FF-8"].labels)
    q = queries["FF-8"].features(8)[rows]
    expected = single_shot_table(retriever, q, queries["FF-8"].labels[rows], [8], **same)
    np.testing.assert_allclose(ff["value"].to_numpy(), expected["value"].to_numpy())
    # Same for the MRL model's rows, which evaluate_retrieval produced.
    retriever = Retriever(databases["MRL"].features(), databases["MRL"].labels)
    q = queries["MRL"].features()[rows]
    expected = single_shot_table(retriever, q, queries["MRL"].labels[rows], [4], **same)
    got = mrl[(mrl["method"] == "single-shot") & (mrl["Ds"] == 4)]
    np.testing.assert_allclose(got["value"].to_numpy(), expected["value"].to_numpy())

    options = {"plan": RetrievalPlan(ks=[5, 10], ablation_sizes=[20, 50], funnel_dims=[8])}
    few = evaluate_models(databases, queries, progress=False, **options).table
    assert set(few.loc[few["method"] == "funnel", "cascade"]) == {"8 | 512 | 150"}  # N = 150

    only_single = evaluate_models(
        databases, queries, full_models=[], min_dim=2, progress=False, **options
    )
    assert set(only_single.table["method"]) == {"single-shot"}
    assert sorted(only_single.table.query("model == 'MRL'")["Ds"].unique()) == [2, 4, 8, 512]
    assert only_single.adaptive_models == []


def test_evaluate_models_rejects_bad_input(model_caches):
    databases, queries = model_caches
    with pytest.raises(ValueError, match="not nested"):
        evaluate_models(databases, queries, full_models=["FF-8"], progress=False)
    with pytest.raises(ValueError, match="not among"):
        evaluate_models(databases, queries, full_models=["MRL-E"], progress=False)
    with pytest.raises(ValueError, match="but not both"):
        evaluate_models({"MRL": databases["MRL"]}, queries, progress=False)
    with pytest.raises(ValueError, match="min_dim"):
        evaluate_models(databases, queries, min_dim=1000, progress=False)
    with pytest.raises(ValueError, match="no models"):
        evaluate_models({}, {}, progress=False)


def test_evaluate_models_runs_the_frontier_for_adaptive_models_only(model_caches):
    databases, queries = model_caches
    plan = RetrievalPlan(
        ks=[5, 10],
        ablation_sizes=[20],
        funnel_shortlists=[60],
        frontier=True,
        pipelines=[Pipeline(8, None, 40, IndexSpec("ivf", nlist=4, nprobe=2, coarse_dim=4))],
        peers=[PeerSpec("HNSW8,Flat", "efSearch=16")],
        n_boot=100,
    )
    study = evaluate_models(databases, queries, n_queries=30, min_dim=4, plan=plan, progress=False)
    table = study.table
    mrl, ff = table[table["model"] == "MRL"], table[table["model"] == "FF-8"]
    assert {"exact", "pipeline", "peer"} <= set(mrl["method"])
    assert set(ff["method"]) == {"single-shot"}
    pipeline = mrl[(mrl["method"] == "pipeline") & (mrl["metric"] == "nn_recall")]
    assert set(pipeline["config"]) == {"IVF4 Dc=4 nprobe=2"} and set(pipeline["k"]) == {5, 10}
    assert table["ci_low"].notna().all() and (table["bytes_per_vector"] > 0).all()
    assert "faiss" in set(study.indexes["structure"])
