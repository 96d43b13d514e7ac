"""Lessons: the seed demonstrations beside training proper: the strategy
advisor and LogME, domain adaptation (AdaBN, DANN), the skip-connection demo
and the per-backbone stage tables. It may import `core.train` and the shared
pieces at the top of `core`; of `core.insight` only the feature extractor and
projection in `core.insight.embeddings` (one tool, not two copies; see the
allow-list in tests/test_layers.py); never `core.runs` or `core.cli`."""

# Defaults the CLI's help shows, here (torch-free) so that listing the commands imports no torch:
# the adaptation methods and DANN's steps (core.lessons.adapt), the skip demo's depths and steps
# (core.lessons.skipdemo).
ADAPT_METHODS = ("adabn", "dann")
DANN_STEPS = 200
SKIP_DEPTHS = (8, 20, 56)
SKIP_STEPS = 150
