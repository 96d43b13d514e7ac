"""Runs: the run store (SQLite in WAL mode), the queue and its worker process,
background tasks (`python -m core ...` children that pages poll) and
experiment groups (race, label sweep, distillation). It may import
`core.train` and the shared pieces at the top of `core`, never
`core.insight`, `core.lessons` or `core.cli`."""
