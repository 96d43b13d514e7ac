"""Server time of one refresh of the Live and Compare pages with 20 runs of
50 epochs and 500 logged steps per epoch (25,000 step rows per run, half a
million in all). Target: under 0.2 s per refresh (idle cores).

    python bench/ui.py [--quick]   # --quick: 4 runs of 10 epochs

Each refresh is a full script run of the page through Streamlit's AppTest
(what the server does when the page reruns), timed after a first, cold run.
AppTest compiles the page scripts again on every run (a new ScriptCache per
run); the server compiles them once and keeps the bytecode, so the bench
shares one cache between runs, as the server does. Wall time is the figure
(the target is on idle cores); the process's CPU time per refresh is printed
beside it with the load average, since on a shared machine wall time also
counts the wait for a core. The same-run reference is the same page over one
small run (3 epochs of 50 steps): the ratio says what the big store costs on
top of the page itself.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

import common  # noqa: F401
from common import ROOT, machine, options, report, verdict

TARGET = 0.2


def seed(home: str, runs: int, epochs: int, steps_per_epoch: int) -> None:
    """A store of finished runs in one group, with every metric a real run writes."""
    import torch

    from core.runs.store import Store
    from core.train import backbones, strategies
    from core.train.config import RunConfig

    os.environ["TLAB_HOME"] = home
    store = Store()
    spec = backbones.get("small_cnn")
    with torch.device("meta"):
        model = backbones.build(spec, 10, 32)
    group = None
    for r in range(runs):
        strategy = ("full", "scratch", "partial", "feature_extraction")[r % 4]
        cfg = RunConfig(backbone="small_cnn", strategy="scratch" if strategy != "full" else "full", epochs=epochs,
                        image_size=32, seed=r, name=f"run {r}", weights="w.pt" if strategy == "full" else None)
        plan = strategies.make_plan(spec, model, cfg, 0)
        run_id = store.add_run(cfg.to_json(), cfg.name, group, "finished")
        group = group or run_id
        now = time.time()
        total = epochs * steps_per_epoch
        steps = [(run_id, s, 1 + (s - 1) // steps_per_epoch, 2.3 * (1 - s / (total + 1)) + 0.1 * ((s * 7919) % 13) / 13,
                  1e-3 * (1 - s / (total + 1)), 900.0 + s % 50, now - total + s) for s in range(1, total + 1)]
        epoch_rows = [(run_id, e, 2.0 / e, 0.5 + 0.45 * e / epochs, 2.1 / e, 0.5 + 0.44 * e / epochs, 10.0, 900.0,
                       now - (epochs - e)) for e in range(1, epochs + 1)]
        stats = [(run_id, e, g["group"], i, int(g["frozen"]), g["lr"], g["params"], 0.1 / e, 0.01 * e)
                 for e in range(1, epochs + 1) for i, g in enumerate(plan.group_table())]
        result = {"test_accuracy": 0.9, "trainable_params": plan.trainable_params, "seconds": 100.0,
                  "total_params": plan.total_params}
        with store.tx() as c:
            c.executemany("INSERT INTO step_metrics VALUES (?,?,?,?,?,?,?)", steps)
            c.executemany("INSERT INTO epoch_metrics VALUES (?,?,?,?,?,?,?,?,?)", epoch_rows)
            c.executemany("INSERT INTO layer_stats VALUES (?,?,?,?,?,?,?,?,?)", stats)
            c.execute("UPDATE runs SET steps_per_epoch=?, epochs_done=?, best_val_accuracy=?, val_accuracy=?, "
                      "test_accuracy=?, class_names=?, plan=?, result=?, started=?, ended=?, device='cpu' WHERE id=?",
                      (steps_per_epoch, epochs, 0.95, 0.94, 0.9, json.dumps([str(i) for i in range(10)]),
                       json.dumps(plan.rows()), json.dumps(result), now - total, now, run_id))
    store.close()


def _server_script_cache() -> None:
    """One ScriptCache for every AppTest run, as the server keeps one."""
    import streamlit.testing.v1.app_test as app_test
    import streamlit.testing.v1.local_script_runner as local_script_runner
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache

    shared = ScriptCache()
    app_test.ScriptCache = local_script_runner.ScriptCache = lambda: shared


def refresh_seconds(home: str, page: str, repeats: int, uncached: bool = False) -> tuple[float, float]:
    """Median wall and CPU seconds of one full run of `page`; `uncached`: with
    Streamlit's data cache emptied before each (every step series read again,
    as if every run were still going)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["TLAB_HOME"] = home
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.switch_page(f"views/{page}.py").run()  # cold: imports, first queries
    assert not at.exception, at.exception
    walls, cpus = [], []
    for _ in range(repeats):
        if uncached:
            st.cache_data.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        at.run()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        assert not at.exception, at.exception
    return statistics.median(walls), statistics.median(cpus)


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    args = options(__doc__.splitlines()[0]).parse_args()
    runs, epochs, spe = (4, 10, 500) if args.quick else (20, 50, 500)
    big, small = tempfile.mkdtemp(prefix="tlab-ui-big-"), tempfile.mkdtemp(prefix="tlab-ui-small-")
    t0 = time.perf_counter()
    seed(big, runs, epochs, spe)
    seeded = time.perf_counter() - t0
    seed(small, 1, 3, 50)
    repeats = args.repeats or 7
    _server_script_cache()
    lines = [f"machine: {machine('cpu')}",
             f"store: {runs} runs x {epochs} epochs x {spe} steps = {runs * epochs * spe:,} step rows (seeded in {seeded:.1f} s)"]
    for page in ("live", "compare"):
        heavy, heavy_cpu = refresh_seconds(big, page, repeats)
        light, light_cpu = refresh_seconds(small, page, repeats)
        lines.append(f"{page}: {heavy:.3f} s per refresh with the big store ({heavy / TARGET:.2f} of the {TARGET} s target: "
                     f"{verdict(heavy, TARGET, higher_is_better=False)}), CPU {heavy_cpu:.3f} s; one small run: "
                     f"{light:.3f} s (CPU {light_cpu:.3f} s), ratio {heavy / light:.2f}; {load()}")
    every, every_cpu = refresh_seconds(big, "live", repeats, uncached=True)
    lines.append(f"live, every series read again each refresh (no cache): {every:.3f} s (CPU {every_cpu:.3f} s); {load()}")
    report(args, "ui: server time per page refresh (cpu)", lines)


if __name__ == "__main__":
    main()
