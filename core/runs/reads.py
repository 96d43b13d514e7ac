"""The run store's readers: DataFrames for the pages' tables and charts and
for the CLI (a mixin of `Store`, which gives them `query`)."""

from __future__ import annotations

import json
from typing import Iterable


class StoreReads:
    """Runs, metrics, layer stats and events as DataFrames."""


    def runs(self, group_id: str | None = None):
        import pandas as pd

        sql = ("SELECT id, group_id, kind, name, status, reason, device, world_size, created, started, ended, epochs_done, "
               "best_val_accuracy, val_accuracy, test_accuracy, result, config FROM runs")
        args: tuple = ()
        if group_id:
            sql += " WHERE group_id = ?"
            args = (group_id,)
        df = pd.DataFrame([dict(r) for r in self.query(sql + " ORDER BY created, id", args)],
                          columns=["id", "group_id", "kind", "name", "status", "reason", "device", "world_size", "created", "started",
                                   "ended", "epochs_done", "best_val_accuracy", "val_accuracy", "test_accuracy",
                                   "result", "config"])
        configs = [json.loads(c) for c in df["config"]]
        for key in ("backbone", "strategy", "dataset", "epochs", "labels_per_class", "seed", "teacher"):
            # object dtype: an unset setting stays None (pandas would make it NaN, which is truthy)
            df[key] = pd.Series([c.get(key) for c in configs], index=df.index, dtype=object)
        results = [json.loads(r) if isinstance(r, str) and r else {} for r in df["result"]]  # NULL may arrive as NaN
        df["trainable_params"] = [r.get("trainable_params") for r in results]
        df["seconds"] = [r.get("seconds") for r in results]
        return df.drop(columns=["result"])

    def metrics(self, run_ids: Iterable[str], kind: str = "epoch", max_points: int | None = None):
        """Epoch (or step, or per-process "rank") metrics of several runs, long format with a run_id column.

        `max_points` (steps only): a run with more logged steps comes back as
        about that many evenly spaced ones, its first and last kept. SQLite
        picks them in one pass over the run's rows (a modulo on the step
        number; averaging them in a GROUP BY costs ten times more), so a page
        drawing 20 runs of 25,000 steps reads 10,000 rows, not half a million."""
        import pandas as pd

        ids = list(run_ids)
        table = {"epoch": "epoch_metrics", "step": "step_metrics", "rank": "rank_metrics"}[kind]
        order = "epoch" if kind == "epoch" else "step, rank" if kind == "rank" else "step"
        if not ids:
            return pd.DataFrame()
        if kind == "step" and max_points:
            frames = [self._step_buckets(run_id, int(max_points)) for run_id in ids]
            frames = [f for f in frames if len(f)]
            return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        marks = ",".join("?" * len(ids))
        rows = self.query(f"SELECT * FROM {table} WHERE run_id IN ({marks}) ORDER BY run_id, {order}", ids)
        return pd.DataFrame([dict(r) for r in rows])

    def _step_buckets(self, run_id: str, max_points: int):
        import pandas as pd

        # The first two and the last step: index look-ups, no scan. Steps are logged
        # every `every` steps (10 on a GPU), so the stride is a multiple of that.
        first = [r["step"] for r in self.query("SELECT step FROM step_metrics WHERE run_id = ? ORDER BY step LIMIT 2", (run_id,))]
        if not first:
            return pd.DataFrame()
        hi = self.query("SELECT MAX(step) AS s FROM step_metrics WHERE run_id = ?", (run_id,))[0]["s"]
        lo, every = first[0], (first[1] - first[0] if len(first) > 1 else 1)
        logged = (hi - lo) // max(1, every) + 1
        stride = every * max(1, -(-logged // max(2, max_points)))
        # The wanted steps as a list: SQLite looks each up in the primary key
        # instead of scanning the run's rows (a modulo filter reads all 25,000).
        wanted = json.dumps(sorted({*range(lo, hi + 1, stride), hi}))
        rows = self.query("SELECT * FROM step_metrics WHERE run_id = ? AND step IN (SELECT value FROM json_each(?)) "
                          "ORDER BY step", (run_id, wanted))
        return pd.DataFrame([tuple(r) for r in rows], columns=rows[0].keys()) if rows else pd.DataFrame()

    def layer_stats(self, run_id: str):
        import pandas as pd

        rows = self.query("SELECT epoch, grp AS \"group\", position, frozen, lr, params, grad_norm, weight_change "
                          "FROM layer_stats WHERE run_id = ? ORDER BY epoch, position", (run_id,))
        df = pd.DataFrame([dict(r) for r in rows])
        if not df.empty:
            df["frozen"] = df["frozen"].astype(bool)
        return df

    def events(self, run_id: str):
        import pandas as pd

        rows = self.query("SELECT t, level, message, detail FROM events WHERE run_id = ? ORDER BY id", (run_id,))
        return pd.DataFrame([dict(r) for r in rows], columns=["t", "level", "message", "detail"])

    def decode_progress(self, run_id: str) -> tuple[int, int] | None:
        """(done, total) of a run's first decode of its images, from its latest note of it; None if none."""
        from core.train.decode import parse_progress

        rows = self.query("SELECT message FROM events WHERE run_id = ? AND message LIKE 'decoding images:%' "
                          "ORDER BY id DESC LIMIT 1", (run_id,))
        return parse_progress(rows[0]["message"]) if rows else None
