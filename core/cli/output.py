"""What every command prints: a plain table, `--json`, and how a run ended.
Command modules import these; this module imports nothing of the engine."""

from __future__ import annotations

import json
import sys


def print_table(rows: list[dict], columns: list[str]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def out(args, obj, rows: list[dict] | None = None, columns: list[str] | None = None) -> None:
    if args.json:
        print(json.dumps(obj, indent=2, default=str))
    elif rows is not None:
        print_table(rows, columns)


def fmt(rows: list[dict]) -> list[dict]:
    return [{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]


def result_of(row: dict) -> dict:
    result = row.get("result")
    result = json.loads(result) if isinstance(result, str) else (result or {})
    return {"run_id": row["id"], **result, "status": row["status"], "reason": row["reason"]}


# What the training recipe adds to a run's result (core.train.events.RunResult).
RECIPE_FIELDS = ("best_epoch", "scored_epoch", "stop_reason", "balanced_accuracy", "temperature", "ece", "ece_calibrated")


def recipe_lines(out: dict) -> None:
    """Which epoch's weights were scored, why the run stopped, calibration."""
    if out.get("scored_epoch") is not None:
        print(f"test scored with epoch {out['scored_epoch']}'s weights (best validation epoch: {out['best_epoch']}); "
              f"{out.get('stop_reason') or ''}")
    if out.get("ece") is not None:
        print(f"balanced accuracy {out['balanced_accuracy']:.4f}; expected calibration error {out['ece']:.4f}, "
              f"{out['ece_calibrated']:.4f} after temperature scaling (T={out['temperature']:.3g})")


def finish(args, row: dict) -> int:
    """Print how a run ended; exit 0 finished, 1 failed in training, 2 could not
    start (bad data or weights), 3 cancelled or interrupted."""
    out = result_of(row)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"run {row['id']}: {row['status']}{' (' + row['reason'] + ')' if row['reason'] else ''}")
        if out.get("test_accuracy") is not None:
            print(f"test accuracy {out['test_accuracy']:.4f}, val accuracy {out['val_accuracy']:.4f} after "
                  f"{out['epochs']} epoch(s) in {out['seconds']:.1f}s ({out['images_per_second']:.0f} images/s "
                  f"on {out['device']}{', feature cache' if out.get('feature_cache') else ''})")
        recipe_lines(out)
        if out.get("checkpoint"):
            print(f"trainable {out['trainable_params']:,} of {out['total_params']:,} parameters; checkpoint {out['checkpoint']}")
    if row["status"] == "failed":
        print(f"error: {row['reason']}", file=sys.stderr)
        return 1 if row.get("result") else 2
    return 0 if row["status"] == "finished" else 3


class DecodeProgress:
    """A progress line on stderr for a long decode of images: one bar redrawn in
    a terminal, else a line at most every second (the page's background task
    reads the last one): 'decoding images: 4,000 / 20,000 (20%)'."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.last, self.bar = enabled, 0.0, None

    def __call__(self, done: int, total: int) -> None:
        import time

        if not self.enabled:
            return
        if sys.stderr.isatty():
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=total, desc="decoding images", unit="img", file=sys.stderr, leave=False)
            self.bar.update(done - self.bar.n)
            if done >= total:
                self.bar.close()
                self.bar = None
            return
        now = time.monotonic()
        if done in (0, total) or now - self.last >= 1.0:
            self.last = now
            from core.train.decode import progress_text

            print(progress_text(done, total), file=sys.stderr, flush=True)
