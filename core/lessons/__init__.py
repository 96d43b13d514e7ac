"""Lessons: the seed demonstrations beside training proper: the strategy
advisor and LogME, domain adaptation (AdaBN, DANN), the skip-connection demo
and the per-backbone stage tables. It may import `core.train` and the shared
pieces at the top of `core`; of `core.insight` only the feature extractor and
projection in `core.insight.embeddings` (one tool, not two copies; see the
allow-list in tests/test_layers.py); never `core.runs` or `core.cli`."""
