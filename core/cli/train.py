"""`train` (in the foreground, with a progress bar; under torchrun on
several processes) and `launch` (queued for the background worker)."""

from __future__ import annotations

import json
import sys

from core.cli.options import run_config, run_configs, train_options
from core.cli.output import finish


class Progress:
    """A tqdm bar on stderr, fed by engine events."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None

    def __call__(self, event) -> None:
        from core.train import events

        if not self.enabled:
            return
        if isinstance(event, events.RunStart):
            from tqdm import tqdm

            total = event.steps_per_epoch * event.config.epochs
            self.bar = tqdm(total=total, initial=event.steps_per_epoch * (event.start_epoch - 1),
                            desc=f"{event.config.backbone}/{event.config.strategy}", unit="step",
                            file=sys.stderr, dynamic_ncols=True, leave=False)
        elif isinstance(event, events.Step) and self.bar is not None:
            self.bar.update(event.step - self.bar.n)
            self.bar.set_postfix(epoch=event.epoch, loss=f"{event.loss:.3f}", refresh=False)
        elif isinstance(event, events.EpochEnd) and self.bar is not None:
            self.bar.write(f"epoch {event.epoch}: train loss {event.train_loss:.4f} acc {event.train_accuracy:.3f} | "
                           f"val loss {event.val_loss:.4f} acc {event.val_accuracy:.3f} | {event.seconds:.1f}s",
                           file=sys.stderr)
        elif isinstance(event, events.Note):
            print(event.message, file=sys.stderr)
        elif isinstance(event, events.RunEnd) and self.bar is not None:
            self.bar.close()


def cmd_train(args) -> int:
    from core.cli import distributed
    from core.runs import jobs

    world = distributed.torchrun_processes(args)
    cfg = run_config(args, **({"processes": world} if world else {}))
    if cfg.processes > 1 and not distributed.under_torchrun():
        return distributed.train_with_torchrun(cfg.processes, args.argv)
    from core.cli.output import DecodeProgress
    from core.train import decode

    with decode.reporting(DecodeProgress(not args.no_progress)):  # a folder's first decode: a progress line too
        row = jobs.run_foreground(cfg, listeners=(Progress(not args.no_progress),))
    if row is None:
        return 0  # another process of a torchrun group: rank 0 reports the run
    return finish(args, row)


def cmd_launch(args) -> int:
    from core.service import launching

    cfgs, kind = run_configs(args, check=False)
    if len(cfgs) == 1 and not kind:
        run_id = launching.launch_one(cfgs[0])
        print(json.dumps({"run_id": run_id, "status": "queued"}) if args.json else run_id)
        return 0
    group, ids = launching.launch(launching.prepare(cfgs, kind))  # a group file: its runs, as one group
    print(json.dumps({"group_id": group, "run_ids": ids, "status": "queued"}) if args.json else "\n".join(ids))
    return 0


def register(sub) -> None:
    for name, fn, helptext in [("train", cmd_train, "train one run in the foreground"),
                               ("launch", cmd_launch, "queue a run for the background worker; prints its id")]:
        sp = sub.add_parser(name, help=helptext)
        train_options(sp, group_file=name == "launch")
        sp.set_defaults(func=fn)
