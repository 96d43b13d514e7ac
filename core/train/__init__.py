"""Training: the run config (plain data), the registries of backbones,
datasets and strategies, weights and data loading (the side effects at this
edge), the engine and its events, distillation, the on-disk caches and
torchrun/DDP. It may import only the shared pieces at the top of `core`
(paths, limits, errors, faults) and itself; it knows nothing of the run store,
the queue, the insight tools, the lessons or the CLI."""
