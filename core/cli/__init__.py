"""`python -m core ...`: `main` (the entry and parser), `options` and `output`
(what several commands share), and one module per command family, each with
a public `register(sub)` that adds its subcommands. The top layer: it may
import every other part of `core`, and nothing in `core` imports it."""
