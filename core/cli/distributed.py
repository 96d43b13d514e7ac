"""The CLI under torchrun: `torchrun ... -m core train ...` trains one run over
every process, and `run-rank` is one process of a queued run that the
background worker started with torchrun."""

from __future__ import annotations

import argparse
import os

from core.errors import ConfigError


def under_torchrun() -> bool:
    from core.train import distributed

    return distributed.under_torchrun()


def torchrun_processes(args) -> int | None:
    """Under torchrun, the run's process count is torchrun's (None otherwise);
    --processes, if given, must say the same."""
    if not under_torchrun():
        return None
    world = int(os.environ["WORLD_SIZE"])
    if args.processes and args.processes != world:
        raise ConfigError(f"torchrun started {world} processes but --processes says {args.processes}: "
                          "leave --processes out under torchrun, or make the two match.")
    return world


def train_with_torchrun(nproc: int, argv: list[str]) -> int:
    """`python -m core train --processes N ...` on one machine: the same command
    under `torchrun --standalone --nproc-per-node N`, which this waits for."""
    from core import children
    from core.train import distributed

    return children.run_child(distributed.torchrun_command(nproc, argv), children.core_env(), stdin=None)


def cmd_run_rank(args) -> int:
    from core.runs import jobs

    jobs.execute_rank(args.run_id)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("run-rank", help="(started by the worker under torchrun) one process of a queued run")
    sp.add_argument("run_id")
    sp.set_defaults(func=cmd_run_rank)
