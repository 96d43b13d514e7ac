"""Insight: tools that look at a model, most of them at a trained run:
predictions, Grad-CAM and feature maps, evaluation (confusion matrix, top
losses), embeddings before and after training, export, and the LR finder. It
may import `core.train` and the shared pieces at the top of `core`, never
`core.runs`, `core.lessons` or `core.cli`."""
