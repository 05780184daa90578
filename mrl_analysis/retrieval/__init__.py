"""Theme: adaptive retrieval (shortlist with few dimensions, rerank with many).

``metrics`` (mAP@k, precision, recall, NN recall, MFLOPs, bootstrap intervals) → ``plan``
(index specs, pipelines, faiss peers, funnels, RetrievalPlan) → ``index`` (the Retriever
and the faiss indexes: flat, HNSW, AdANNS-IVF; float32, int8, binary) → ``tables``
(single-shot / adaptive / funnel / ablation / frontier) → ``summary`` (speed-ups, views,
the frontier, headlines) → ``study`` (caches, finding (f); the only cache reader) and
``plots`` (the only plotly importer); ``synthetic`` makes test data.
"""
