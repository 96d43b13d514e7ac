"""`python -m core ...`: the engine from a terminal. Every command has
`--json` for machine-readable output. Errors print one line and exit 2."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from core.cli import adapt, advise, allow, catalog, distributed, experiments, insight, predict, runs, sharing, skipdemo, storage, train, tune
from core.errors import TLabError

log = logging.getLogger("core")

# The command families, in the order `--help` lists them: each module's public
# `register(sub)` adds its subparsers (with `set_defaults(func=...)`).
COMMAND_MODULES = (
    catalog,  # backbones, datasets, strategies, plan
    train,  # train, launch
    experiments,  # race, sweep-labels, distill
    tune,  # tune: a hyperparameter search (Optuna)
    runs,  # runs, show, wait, cancel, resume, worker
    sharing,  # pack, unpack, export-mlflow
    storage,  # du, delete, check, slim, backup, restore
    predict,
    insight,  # explain, evaluate, embed, filters, feature-maps, lr-find, export
    distributed,  # run-rank: one process of a run under torchrun
    advise,
    adapt,
    skipdemo,
    allow,  # allow: the folders folder:PATH may read
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: one line and exit 2, like TLabError
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m core", description="Transfer Learning Lab engine")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in COMMAND_MODULES:
        module.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except TLabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head`: the reader left, nothing more to say
        sys.stderr.close()
        return 0
    except MemoryError:
        print("error: out of memory: try a smaller batch size or image size, or fewer images.", file=sys.stderr)
        return 1
    except Exception as e:  # a bug or an environment problem: one line, the traceback only with -v
        if args.verbose:
            log.exception("unexpected error")
        reason = " ".join(str(e).split())[:300] or "no message"
        print(f"error: unexpected {type(e).__name__}: {reason}. Run again with -v (`python -m core -v ...`) "
              "to see where it happened, and report it.", file=sys.stderr)
        return 1
