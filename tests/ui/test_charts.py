"""Chart builders: what a person would see, from small DataFrames shaped like
the run store's readers (and one round trip through a real store)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from core.runs.store import Store, StoreListener
from core.train import backbones, events, strategies
from core.train.config import RunConfig
from ui import charts

RUN_COLUMNS = ["id", "group_id", "name", "status", "reason", "device", "created", "started", "ended", "epochs_done",
               "best_val_accuracy", "val_accuracy", "test_accuracy", "config", "backbone", "strategy", "dataset", "epochs"]


def run_row(run_id, strategy, backbone="efficientnet_lite0", test=None, name="", status="finished", epochs=3):
    cfg = {"backbone": backbone, "strategy": strategy, "dataset": "digits", "epochs": epochs}
    return {"id": run_id, "group_id": "g-1", "name": name, "status": status, "reason": "", "device": "cpu",
            "created": 1.0, "started": 1.0, "ended": 2.0, "epochs_done": epochs, "best_val_accuracy": 0.9,
            "val_accuracy": 0.9, "test_accuracy": test, "config": json.dumps(cfg, sort_keys=True),
            "backbone": backbone, "strategy": strategy, "dataset": "digits", "epochs": epochs}


@pytest.fixture
def runs():
    return pd.DataFrame([run_row("r-full", "full", test=0.91), run_row("r-scratch", "scratch", "small_cnn", test=0.62),
                         run_row("r-fe", "feature_extraction", test=0.84)], columns=RUN_COLUMNS)


@pytest.fixture
def metrics():
    """Epoch metrics like Store.metrics(ids): val accuracy per run and epoch."""
    val = {"r-full": [0.70, 0.86, 0.93], "r-scratch": [0.20, 0.45, 0.61], "r-fe": [0.80, 0.83, 0.85]}
    secs = {"r-full": 10.0, "r-scratch": 4.0, "r-fe": 1.0}
    rows = []
    for rid in sorted(val):  # the store orders by run_id, epoch
        for e, acc in enumerate(val[rid], 1):
            rows.append({"run_id": rid, "epoch": e, "train_loss": 1.0 / e, "train_accuracy": min(1.0, acc + 0.03),
                         "val_loss": 1.2 / e, "val_accuracy": acc, "seconds": secs[rid],
                         "images_per_second": 100.0, "t": 1000.0 + e})
    return pd.DataFrame(rows)


@pytest.fixture
def steps():
    """Step metrics like Store.metrics(ids, "step"): 1,200 noisy steps per run."""
    rng = np.random.default_rng(0)
    rows = []
    for rid in ("r-full", "r-scratch"):
        for s in range(1, 1201):
            rows.append({"run_id": rid, "step": s, "epoch": 1 + (s - 1) // 400,
                         "loss": 2.3 / (1 + s / 200) + rng.normal(0, 0.2) ** 2, "lr": 1e-3 * (1 - s / 1300),
                         "images_per_second": 500.0, "t": float(s)})
    return pd.DataFrame(rows)


GROUPS = [("stem", 928), ("stage1", 1_448), ("stage2", 16_714), ("stage3", 46_640), ("stage4", 242_930),
          ("head", 12_810)]


@pytest.fixture
def stats():
    """Layer stats like Store.layer_stats(id) under gradual unfreezing: the
    head trains from epoch 1, stage4 from 2, stage3 from 3."""
    rows = []
    for epoch in (1, 2, 3):
        for pos, (g, params) in enumerate(GROUPS):
            trainable = pos >= len(GROUPS) - epoch
            rows.append({"epoch": epoch, "group": g, "position": pos, "frozen": not trainable,
                         "lr": 1e-3 if trainable else 0.0, "params": params,
                         "grad_norm": 0.1 * (pos + 1) if trainable else 0.0,
                         "weight_change": 0.02 * epoch * (pos + 1) if trainable else 0.0})
    df = pd.DataFrame(rows)
    df["frozen"] = df["frozen"].astype(bool)
    return df


def line_color(trace) -> str:
    return trace.line.color if trace.type == "scatter" else trace.marker.color


def annotations_text(fig) -> str:
    return " ".join(a.text for a in fig.layout.annotations)


def compact(fig, top=380):
    assert fig.layout.template.layout.paper_bgcolor is not None  # a template is applied
    assert 150 <= fig.layout.height <= top
    assert fig.layout.margin.l <= 20 and fig.layout.margin.r <= 20 and fig.layout.margin.b <= 20


# --- colours and labels ------------------------------------------------------------


def test_every_strategy_has_its_own_fixed_colour_and_scratch_is_warm_grey():
    transfer = [s for s in strategies.REGISTRY if s != "scratch"]
    colours = [charts.strategy_color(s) for s in transfer]
    assert len(set(colours)) == len(transfer)
    assert charts.strategy_color("scratch") == charts.SCRATCH_COLOR not in colours
    r, g, b = (int(charts.SCRATCH_COLOR[i:i + 2], 16) for i in (1, 3, 5))
    assert r >= g >= b and r - b < 40  # grey with a warm cast
    assert {charts.FROZEN_COLOR, charts.TRAINABLE_COLOR}.isdisjoint(colours + [charts.SCRATCH_COLOR])
    assert charts.strategy_color("something_new") == charts.strategy_color("something_new")  # stable


def test_run_label_names_strategy_and_backbone(runs):
    assert charts.run_label(runs.iloc[0]) == "full · efficientnet_lite0"
    assert charts.run_label({"config": json.dumps({"strategy": "scratch", "backbone": "small_cnn"})}) == "scratch · small_cnn"
    assert charts.run_label(run_row("x", "partial", name="my try")) == "partial · efficientnet_lite0 (my try)"


# --- layer groups ----------------------------------------------------------------


def lite0_plan(strategy="partial", **kw):
    spec = backbones.get("efficientnet_lite0")
    with torch.device("meta"):  # shapes only: no memory, no weights
        model = backbones.build(spec, 10, 64)
    return strategies.make_plan(spec, model, RunConfig(strategy=strategy, **kw))


def test_layer_map_shows_every_group_in_forward_order_coloured_by_frozen():
    plan = lite0_plan("partial", freeze_stages=2)
    table = plan.group_table()
    fig = charts.layer_map(table, title="Partial fine-tuning")
    order = list(fig.layout.xaxis.categoryarray)
    assert order == [r["group"] for r in table] and order[0] == "stem" and order[-1] == "head"
    by_name = {t.name: t for t in fig.data}
    trainable, frozen = by_name[charts.TRAINABLE_LABEL], by_name[charts.FROZEN_LABEL]
    assert trainable.marker.color == charts.TRAINABLE_COLOR and frozen.marker.color == charts.FROZEN_COLOR
    assert trainable.marker.color != frozen.marker.color
    assert list(frozen.x) == ["stem", "stage1", "stage2"]
    assert sorted(list(frozen.x) + list(trainable.x), key=order.index) == order  # every group has a bar
    # The 12,810-parameter head stays visible next to million-parameter stages: log axis, labelled.
    head = list(trainable.x).index("head")
    assert trainable.y[head] == 1280 * 10 + 10 and trainable.text[head] == "12.8k"
    assert fig.layout.yaxis.type == "log" and 10 ** fig.layout.yaxis.range[0] < 1000
    assert all(t.startswith("🔒") for t in frozen.text)
    share = plan.trainable_params / plan.total_params
    assert fig.layout.title.subtitle.text == (f"trainable {charts._human(plan.trainable_params)} of "
                                              f"{charts._human(plan.total_params)} parameters ({share:.1%})")
    assert "learning rate" in trainable.hovertemplate and trainable.customdata[head][1] == "trainable"
    assert fig.layout.title.text == "Partial fine-tuning"
    compact(fig)


def test_layer_map_of_feature_extraction_and_of_scratch():
    fe = charts.layer_map(lite0_plan("feature_extraction").group_table())
    trainable = [t for t in fe.data if t.name == charts.TRAINABLE_LABEL][0]
    assert list(trainable.x) == ["head"]
    assert "(0.4%)" in fe.layout.title.subtitle.text  # 12.8k of 3.4M
    scratch = charts.layer_map(lite0_plan("scratch").group_table())
    assert [t.name for t in scratch.data] == [charts.TRAINABLE_LABEL]
    assert scratch.layout.title.subtitle.text.endswith("(100.0%)")


def test_layer_stats_map_latest_epoch_in_position_order(stats):
    shuffled = stats.sample(frac=1, random_state=1)
    fig = charts.layer_stats_map(shuffled)
    assert list(fig.layout.xaxis.categoryarray) == [g for g, _ in GROUPS]
    assert "epoch 3" in fig.layout.title.subtitle.text
    change = {t.name: t for t in fig.data if t.xaxis == "x"}
    grads = {t.name: t for t in fig.data if t.xaxis == "x2"}
    assert set(change) == set(grads) == {charts.TRAINABLE_LABEL, charts.FROZEN_LABEL}
    assert list(change[charts.TRAINABLE_LABEL].x) == ["stage3", "stage4", "head"]
    assert list(change[charts.TRAINABLE_LABEL].y) == pytest.approx([0.24, 0.30, 0.36])
    assert list(grads[charts.FROZEN_LABEL].y) == [0.0, 0.0, 0.0]
    # the same colours as the layer map
    layer = {t.name: t.marker.color for t in charts.layer_map(stats[stats["epoch"] == 3].to_dict("records")).data}
    assert {n: t.marker.color for n, t in change.items()} == layer
    assert sum(t.showlegend is not False for t in fig.data) == 2  # one legend entry per state
    compact(fig)


def test_layer_stats_map_at_an_earlier_epoch(stats):
    fig = charts.layer_stats_map(stats, epoch=1)
    trainable = [t for t in fig.data if t.name == charts.TRAINABLE_LABEL and t.xaxis == "x"][0]
    assert list(trainable.x) == ["head"] and "epoch 1" in fig.layout.title.subtitle.text


def test_thaw_timeline_shows_when_each_group_thawed(stats):
    fig = charts.thaw_timeline(stats)
    heat = fig.data[0]
    assert heat.type == "heatmap" and list(heat.y) == [g for g, _ in GROUPS] and list(heat.x) == [1, 2, 3]
    z = np.asarray(heat.z)
    assert z[-1].tolist() == [1, 1, 1]  # head: trainable from the start
    assert z[-2].tolist() == [0, 1, 1] and z[-3].tolist() == [0, 0, 1]
    assert z[0].tolist() == [0, 0, 0]
    assert heat.colorscale[0][1] == charts.FROZEN_COLOR and heat.colorscale[-1][1] == charts.TRAINABLE_COLOR
    assert fig.layout.yaxis.autorange == "reversed"  # stem on top
    assert fig.layout.title.subtitle.text == "thawed: stage4 at epoch 2, stage3 at epoch 3"
    changes = charts.thaw_timeline(stats, value="weight_change")
    assert np.asarray(changes.data[0].z)[-1].tolist() == pytest.approx([0.12, 0.24, 0.36])


# --- curves ----------------------------------------------------------------------------


def test_epoch_curves_one_line_per_run_coloured_by_strategy(metrics, runs):
    fig = charts.epoch_curves(metrics, runs)
    assert [t.name for t in fig.data] == ["full · efficientnet_lite0", "scratch · small_cnn",
                                          "feature_extraction · efficientnet_lite0"]  # the runs' order
    assert [line_color(t) for t in fig.data] == [charts.strategy_color(s) for s in ("full", "scratch", "feature_extraction")]
    assert line_color(fig.data[0]) != line_color(fig.data[1])  # transfer vs scratch
    assert list(fig.data[0].y) == [0.70, 0.86, 0.93] and list(fig.data[0].x) == [1, 2, 3]
    low, high = fig.layout.yaxis.range  # a round 10% below the lowest accuracy, up to 100%
    assert high == 1.02 and low <= min(min(t.y) for t in fig.data) and low == round(low, 1)
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.yref == "container"  # legend on top
    assert fig.layout.legend.y > 0.8 and fig.layout.margin.t > 40
    with_train = charts.epoch_curves(metrics, runs, train=True)
    dashed = [t for t in with_train.data if t.line.dash == "dash"]
    assert len(with_train.data) == 6 and len(dashed) == 3 and all(t.showlegend is False for t in dashed)
    assert [line_color(t) for t in dashed] == [line_color(t) for t in fig.data]
    loss = charts.epoch_curves(metrics, runs, metric="val_loss")
    assert loss.layout.yaxis.range is None  # only accuracy is pinned to 0..1
    compact(fig)


def test_curves_grid_has_four_panels_and_one_legend_entry_per_run(metrics, runs):
    fig = charts.curves_grid(metrics, runs)
    assert len(fig.data) == 4 * 3
    assert [a.text for a in fig.layout.annotations] == ["training loss", "validation loss", "training accuracy",
                                                        "validation accuracy"]
    assert sum(t.showlegend is not False for t in fig.data) == 3
    assert {t.line.dash for t in fig.data if "train" in t.hovertemplate} == {"dash"}
    lowest = min(min(t.y) for t in fig.data if "accuracy" in t.hovertemplate)
    for axis in (fig.layout.yaxis3, fig.layout.yaxis4):
        assert axis.range[1] == 1.02 and axis.range[0] <= lowest
    compact(fig, top=500)  # four panels: taller, still one laptop screen


def test_runs_sharing_a_label_or_colour_stay_distinguishable(metrics):
    twins = pd.DataFrame([run_row("20250101-aaaaaa", "full"), run_row("20250101-bbbbbb", "full")], columns=RUN_COLUMNS)
    m = metrics[metrics["run_id"] == "r-full"]
    m = pd.concat([m.assign(run_id="20250101-aaaaaa"), m.assign(run_id="20250101-bbbbbb")])
    fig = charts.epoch_curves(m, twins)
    assert [t.name for t in fig.data] == ["full · efficientnet_lite0 · aaaaaa", "full · efficientnet_lite0 · bbbbbb"]
    assert fig.data[0].line.color == fig.data[1].line.color
    assert fig.data[0].marker.symbol != fig.data[1].marker.symbol


def test_step_loss_raw_faint_smoothed_bold_and_downsampled(steps, runs):
    fig = charts.step_loss(steps, runs, smoothing=0.9, max_points=200)
    assert len(fig.data) == 4  # raw + smoothed per run
    raw, smooth = fig.data[0], fig.data[1]
    assert raw.opacity < 0.5 and raw.line.width < smooth.line.width and raw.showlegend is False
    assert raw.line.color == smooth.line.color == charts.strategy_color("full")
    assert fig.data[3].line.color == charts.strategy_color("scratch")
    for t in fig.data:
        assert len(t.x) <= 200 and t.x[0] == 1 and t.x[-1] == 1200  # capped, first and last kept
    first = steps[steps["run_id"] == "r-full"]["loss"]
    assert smooth.y[0] == pytest.approx(first.iloc[0])  # bias-corrected: no dip towards zero
    assert raw.y[-1] == pytest.approx(first.iloc[-1])
    assert np.std(np.diff(smooth.y)) < np.std(np.diff(raw.y))  # smoother than the raw loss
    none = charts.step_loss(steps, runs, smoothing=0.0)
    assert list(none.data[1].y) == pytest.approx(list(none.data[0].y))
    assert len(none.data[0].x) == 500  # the default cap


def test_downsample_caps_points_and_keeps_both_ends():
    frame = pd.DataFrame({"step": np.arange(1, 1002)})
    for cap in (2, 7, 100, 1000):
        out = charts.downsample(frame, cap)
        assert len(out) <= cap and out["step"].iloc[0] == 1 and out["step"].iloc[-1] == 1001
        assert out["step"].is_monotonic_increasing
    assert len(charts.downsample(frame.head(5), 100)) == 5
    assert charts.downsample(frame.head(0), 10).empty


def test_lr_curve(steps, runs):
    fig = charts.lr_curve(steps, runs, max_points=100)
    assert len(fig.data) == 2 and all(len(t.x) <= 100 and t.x[-1] == 1200 for t in fig.data)
    assert fig.data[0].y[0] > fig.data[0].y[-1]


def test_accuracy_vs_time_uses_cumulative_seconds(metrics, runs):
    fig = charts.accuracy_vs_time(metrics, runs)
    full = fig.data[0]
    assert list(full.x) == [10.0, 20.0, 30.0] and list(full.y) == [0.70, 0.86, 0.93]
    assert list(fig.data[2].x) == [1.0, 2.0, 3.0]
    assert [t.line.color for t in fig.data] == [charts.strategy_color(s) for s in ("full", "scratch", "feature_extraction")]


def test_time_to_accuracy(metrics):
    table = charts.time_to_accuracy(metrics, 0.85)
    rows = {r.run_id: r for r in table.itertuples()}
    assert rows["r-full"].epoch == 2 and rows["r-full"].seconds == 20.0 and rows["r-full"].reached
    assert rows["r-fe"].epoch == 3 and rows["r-fe"].seconds == 3.0
    assert pd.isna(rows["r-scratch"].epoch) and np.isnan(rows["r-scratch"].seconds) and not rows["r-scratch"].reached
    assert rows["r-scratch"].best_val_accuracy == 0.61
    assert charts.time_to_accuracy(metrics, 0.5).set_index("run_id")["epoch"].to_dict() == {"r-fe": 1, "r-full": 1, "r-scratch": 3}
    empty = charts.time_to_accuracy(pd.DataFrame(), 0.9)
    assert empty.empty and list(empty.columns) == ["run_id", "reached", "epoch", "seconds", "best_val_accuracy"]


# --- results -----------------------------------------------------------------------------


def test_test_accuracy_bars_best_first_coloured_by_strategy_and_labelled(runs):
    unfinished = pd.DataFrame([run_row("r-run", "partial", test=None, status="running")], columns=RUN_COLUMNS)
    fig = charts.test_accuracy_bars(pd.concat([runs, unfinished], ignore_index=True))
    assert list(fig.layout.yaxis.categoryarray) == ["full · efficientnet_lite0", "feature_extraction · efficientnet_lite0",
                                                    "scratch · small_cnn"]
    assert fig.layout.yaxis.autorange == "reversed"  # the best on top
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"full", "scratch", "feature_extraction"}  # the running run is left out
    assert by_name["full"].marker.color == charts.strategy_color("full")
    assert by_name["scratch"].marker.color == charts.SCRATCH_COLOR != by_name["full"].marker.color
    assert list(by_name["full"].text) == ["91.0%"] and list(by_name["scratch"].text) == ["62.0%"]
    assert fig.layout.legend.y > 0.8 and fig.layout.legend.yanchor == "top"
    compact(fig)


def test_topk_bars_most_likely_on_top():
    fig = charts.topk_bars([("7", 0.81), ("1", 0.12), ("9", 0.04)], "Top 3")
    bar = fig.data[0]
    assert list(bar.y) == ["7", "1", "9"] and list(bar.x) == [0.81, 0.12, 0.04]
    assert list(bar.text) == ["81.0%", "12.0%", "4.0%"] and fig.layout.yaxis.autorange == "reversed"
    assert bar.marker.color[0] != bar.marker.color[1]
    assert fig.layout.title.text == "Top 3"


def test_every_chart_says_no_data_instead_of_raising(runs):
    empty = pd.DataFrame()
    figures = [
        charts.layer_map([]), charts.layer_stats_map(empty), charts.thaw_timeline(empty),
        charts.epoch_curves(empty, runs), charts.curves_grid(empty, empty), charts.step_loss(empty, runs),
        charts.lr_curve(empty, empty), charts.test_accuracy_bars(empty),
        charts.test_accuracy_bars(pd.DataFrame(columns=RUN_COLUMNS)), charts.accuracy_vs_time(empty, runs),
        charts.topk_bars([], "Top 5"), charts.epoch_curves(None, None),
    ]
    for fig in figures:
        assert len(fig.data) == 0
        assert "no" in annotations_text(fig).lower()
        assert fig.layout.template.layout.paper_bgcolor is not None
    assert annotations_text(charts.epoch_curves(empty, runs)) == "No data yet"


def test_charts_read_the_run_store_readers_output(isolated_home):
    """Through a real store: the DataFrames the pages will pass."""
    s = Store()
    ids = []
    for strategy, backbone in (("full", "efficientnet_lite0"), ("scratch", "small_cnn")):
        rid = s.add_run(RunConfig(backbone=backbone, strategy=strategy, epochs=2).to_json(), status="running")
        listener = StoreListener(s, rid)
        for epoch in (1, 2):
            for i in range(3):
                listener(events.Step(epoch, (epoch - 1) * 3 + i + 1, 2.0 / (epoch + i), 1e-3, 100.0))
            listener(events.EpochEnd(epoch, 1.0 / epoch, 0.4 * epoch, 1.1 / epoch, 0.45 * epoch, 2.0, 90.0))
            listener(events.LayerStats(epoch, tuple(
                {"group": g, "frozen": strategy != "scratch" and epoch == 1 and g != "head", "lr": 1e-3,
                 "params": p, "grad_norm": 0.1, "weight_change": 0.01 * epoch} for g, p in GROUPS)))
        s.set_status(rid, "finished", test_accuracy=0.8 if strategy == "full" else 0.5)
        ids.append(rid)
    runs = s.runs()
    epochs, steps, stats = s.metrics(ids), s.metrics(ids, "step"), s.layer_stats(ids[0])
    assert [t.name for t in charts.epoch_curves(epochs, runs).data] == ["full · efficientnet_lite0", "scratch · small_cnn"]
    assert len(charts.curves_grid(epochs, runs).data) == 8
    assert len(charts.step_loss(steps, runs).data) == 4
    assert len(charts.lr_curve(steps, runs).data) == 2
    assert len(charts.accuracy_vs_time(epochs, runs).data) == 2
    assert [t.name for t in charts.test_accuracy_bars(runs).data] == ["full", "scratch"]
    assert list(charts.time_to_accuracy(epochs, 0.8)["epoch"]) == [2, 2]
    assert list(charts.layer_stats_map(stats).layout.xaxis.categoryarray) == [g for g, _ in GROUPS]
    assert np.asarray(charts.thaw_timeline(stats).data[0].z)[0].tolist() == [0, 1]
    assert len(charts.layer_map(stats[stats["epoch"] == 2].to_dict("records")).data) == 1


# --- trade-offs, strategy races, sample efficiency, distillation ---------------------------


def test_accuracy_vs_params_one_marker_per_finished_run_on_a_log_axis(runs):
    params = {"r-full": 3_400_000, "r-scratch": 120_000, "r-fe": 12_810}
    table = runs.assign(trainable_params=runs["id"].map(params))
    unfinished = pd.DataFrame([dict(run_row("r-run", "partial", test=None, status="running"), trainable_params=900_000)])
    fig = charts.accuracy_vs_params(pd.concat([table, unfinished], ignore_index=True))
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"full", "scratch", "feature_extraction"}  # the running run is left out
    assert sum(len(t.x) for t in fig.data) == 3
    for strategy, t in by_name.items():
        assert t.marker.color == charts.strategy_color(strategy)
        assert list(t.text) == [strategy] and "text" in t.mode  # labelled with the strategy
    assert list(by_name["feature_extraction"].x) == [12_810] and list(by_name["feature_extraction"].y) == [0.84]
    assert fig.layout.xaxis.type == "log"
    low, high = fig.layout.xaxis.range  # log10 units, every marker inside
    assert low < np.log10(12_810) and high > np.log10(3_400_000)
    assert fig.layout.yaxis.tickformat == ".0%" and fig.layout.yaxis.range[1] == 1.02
    assert "full · efficientnet_lite0" in by_name["full"].customdata[0][0]  # the run in the hover
    assert fig.layout.title.text == "Accuracy vs trainable parameters"
    compact(fig)


def test_layer_maps_side_by_side_one_panel_per_run_coloured_like_layer_map():
    plans = [("feature extraction", lite0_plan("feature_extraction").group_table()),
             ("partial", lite0_plan("partial", freeze_stages=2).group_table()),
             ("full", lite0_plan("full").group_table())]
    fig = charts.layer_maps_side_by_side(plans)
    assert [a.text for a in fig.layout.annotations] == ["feature extraction", "partial", "full"]
    assert {t.xaxis for t in fig.data} == {"x", "x2", "x3"}  # three panels in a row
    assert fig.layout.xaxis.domain[1] < fig.layout.xaxis2.domain[0]
    single = {t.name: t.marker.color for t in charts.layer_map(plans[1][1]).data}
    for t in fig.data:
        assert t.marker.color == single[t.name]  # the same colours as the layer map
    fe = {t.name: t for t in fig.data if t.xaxis == "x"}
    assert list(fe[charts.TRAINABLE_LABEL].x) == ["head"]
    full = [t for t in fig.data if t.xaxis == "x3"]
    assert [t.name for t in full] == [charts.TRAINABLE_LABEL]  # nothing frozen
    # each panel in forward order, every group present
    order = [r["group"] for r in plans[1][1]]
    assert list(fig.layout.xaxis2.categoryarray) == order
    assert sorted(x for t in fig.data if t.xaxis == "x2" for x in t.x) == sorted(order)
    assert fig.layout.yaxis.type == fig.layout.yaxis3.type == "log"
    assert sorted(t.name for t in fig.data if t.showlegend is not False) == sorted(
        [charts.TRAINABLE_LABEL, charts.FROZEN_LABEL])  # one shared legend
    compact(fig)


def test_layer_maps_side_by_side_wraps_into_rows_of_three():
    table = [{"group": g, "params": p, "frozen": i < 3} for i, (g, p) in enumerate(GROUPS)]
    fig = charts.layer_maps_side_by_side([(f"run {i}", table) for i in range(5)])
    assert len(fig.layout.annotations) == 5
    assert {t.xaxis for t in fig.data} == {"x", "x2", "x3", "x4", "x5"}
    assert fig.layout.yaxis4.domain[1] < fig.layout.yaxis.domain[0]  # the fourth starts a second row
    assert fig.layout.xaxis4.domain == fig.layout.xaxis.domain
    compact(fig, top=640)


def labels_summary(all_value=None):
    rows = []
    for strategy, accs in (("full", (0.55, 0.78, 0.90, 0.95)), ("scratch", (0.20, 0.40, 0.62, 0.80))):
        for labels, acc in zip((5, 20, 100, None), accs):
            row = {"strategy": strategy, "labels_per_class": labels, "mean": acc, "std": 0.02, "n": 3}
            if all_value is not None:
                row["labels_value"] = all_value
            rows.append(row)
    return pd.DataFrame(rows)


def test_labels_curve_one_line_per_strategy_with_all_at_the_right_end():
    fig = charts.labels_curve(labels_summary())
    assert [t.name for t in fig.data] == ["full", "scratch"]
    assert [t.line.color for t in fig.data] == [charts.strategy_color("full"), charts.SCRATCH_COLOR]
    full = fig.data[0]
    assert list(full.x) == [5, 20, 100, 200]  # "all" at twice the largest count
    assert list(full.y) == [0.55, 0.78, 0.90, 0.95]
    assert full.error_y.visible and list(full.error_y.array) == [0.02] * 4
    assert fig.layout.xaxis.type == "log"
    assert list(fig.layout.xaxis.ticktext)[-1] == "all" and fig.layout.xaxis.tickvals[-1] == max(full.x)
    assert list(fig.layout.xaxis.ticktext) == ["5", "20", "100", "all"]
    assert full.customdata[-1][0] == "all" and full.customdata[0][2] == "3" and "n =" in full.hovertemplate
    assert fig.layout.title.text == "Test accuracy vs labels per class"
    compact(fig)


def test_labels_curve_places_all_at_the_datasets_largest_count():
    summary = labels_summary(all_value=180)
    summary["labels_per_class"] = summary["labels_per_class"].astype(object).where(
        summary["labels_per_class"].notna(), "all")  # "all" spelled out
    fig = charts.labels_curve(summary)
    assert list(fig.data[1].x) == [5, 20, 100, 180]
    assert fig.layout.xaxis.tickvals[-1] == 180 and fig.layout.xaxis.ticktext[-1] == "all"
    assert np.log10(180) < fig.layout.xaxis.range[1]  # the "all" point is on the chart
    # a dataset "largest count" below a numeric point would not be rightmost: fall back to 2x
    low = charts.labels_curve(labels_summary(all_value=50))
    assert list(low.data[0].x)[-1] == 200


def distill_rows():
    return [
        {"role": "student", "label": "small_cnn alone", "test_accuracy": 0.71, "params": 120_000, "model_mb": 0.5,
         "latency_ms": 0.8},
        {"role": "teacher", "label": "full · efficientnet_lite0", "test_accuracy": 0.93, "params": 3_400_000,
         "model_mb": 13.6, "latency_ms": 9.5},
        {"role": "student_kd", "label": "small_cnn + KD", "test_accuracy": 0.84, "params": 120_000, "model_mb": 0.5,
         "latency_ms": 0.8},
    ]


def test_distill_comparison_three_panels_coloured_by_role():
    fig = charts.distill_comparison(distill_rows())
    assert [a.text for a in fig.layout.annotations] == ["test accuracy", "parameters (log)", "CPU latency per image (ms)"]
    assert {t.xaxis for t in fig.data} == {"x", "x2", "x3"} and len(fig.data) == 9  # three models in three panels
    legend = [t for t in fig.data if t.showlegend is not False]
    assert [t.name for t in legend] == ["teacher: full · efficientnet_lite0", "student + KD: small_cnn + KD",
                                        "student alone: small_cnn alone"]  # teacher first, whatever the input order
    colours = [t.marker.color for t in legend]
    assert colours == [charts.strategy_color("full"), charts.KD_COLOR, charts.STUDENT_COLOR]
    assert len(set(colours)) == 3
    assert charts.KD_COLOR not in set(charts.STRATEGY_COLORS.values()) | {charts.FROZEN_COLOR, charts.TRAINABLE_COLOR}
    acc = [t for t in fig.data if t.xaxis == "x"]
    assert [t.y[0] for t in acc] == [0.93, 0.84, 0.71] and acc[0].text[0] == "93.0%"
    assert fig.layout.yaxis2.type == "log"
    assert [t.y[0] for t in fig.data if t.xaxis == "x3"] == [9.5, 0.8, 0.8]
    assert "13.6 MB" in acc[0].customdata[0][3] and "size" in acc[0].hovertemplate  # model size in the hover
    teacher = dict(distill_rows()[1], strategy="partial", label="my teacher")
    assert charts.distill_comparison([teacher]).data[0].marker.color == charts.strategy_color("partial")
    compact(fig)


def test_new_charts_say_no_data_instead_of_raising(runs):
    empty = pd.DataFrame()
    figures = [
        charts.accuracy_vs_params(empty), charts.accuracy_vs_params(runs.assign(trainable_params=None)),
        charts.accuracy_vs_params(None), charts.layer_maps_side_by_side([]),
        charts.layer_maps_side_by_side([("a", [])]), charts.labels_curve(empty),
        charts.labels_curve(pd.DataFrame(columns=["strategy", "labels_per_class", "mean", "std", "n"])),
        charts.distill_comparison([]), charts.distill_comparison(None),
    ]
    for fig in figures:
        assert len(fig.data) == 0
        assert "no" in annotations_text(fig).lower()
        assert fig.layout.template.layout.paper_bgcolor is not None


def test_fast_multi_run_charts_send_what_plotly_would_validate(metrics, steps, runs):
    """curves_grid, step_loss and lr_curve skip plotly's per-trace checks (the
    Live page draws a hundred traces per refresh): the JSON they send must
    still be a figure plotly accepts in full, and equal to a checked build."""
    for fig in (charts.curves_grid(metrics, runs), charts.step_loss(steps, runs), charts.lr_curve(steps, runs)):
        sent = json.loads(fig.to_json())
        checked = go.Figure(sent)  # validates every property; raises on anything plotly would refuse
        assert json.loads(checked.to_json()) == sent
        assert all(isinstance(t.x, np.ndarray) and len(t.x) == len(t.y) for t in fig.data)


def test_every_live_and_compare_figure_sends_what_plotly_would_validate(metrics, steps, runs, stats):
    """The Live and Compare figures are written as plotly JSON (ui/charts/spec.py) and
    sent without plotly's checks: each must be a figure plotly accepts in full and
    sends the same, and read as a figure it behaves as one."""
    figures = [charts.layer_stats_map(stats), charts.thaw_timeline(stats), charts.thaw_timeline(stats, "weight_change"),
               charts.epoch_curves(metrics, runs, train=True), charts.accuracy_vs_time(metrics, runs),
               charts.test_accuracy_bars(runs), charts.empty_figure("nothing yet", "Title")]
    for fig in figures:
        sent = json.loads(fig.to_json())
        assert json.loads(go.Figure(sent).to_json()) == sent
    fig = charts.empty_figure("nothing yet", "Title")
    fig.update_layout(height=200)  # read as a figure: built in full, then changed like any other
    assert fig.layout.height == 200 and json.loads(fig.to_json())["layout"]["height"] == 200
