"""Theme: adaptive retrieval (shortlist with few dimensions, rerank with many).

``metrics`` (mAP@k, precision, recall, MFLOPs) → ``plan`` (funnels, RetrievalPlan) →
``index`` (IndexSpec, Retriever) → ``tables`` (single-shot / adaptive / funnel / ablation)
→ ``summary`` (speed-ups, views, headlines) → ``study`` (caches; the only cache reader) and
``plots`` (the only plotly importer); ``synthetic`` makes test data.
"""
