"""Plotly figure builders for the dashboard: pure functions, DataFrames or
lists in, `plotly.graph_objects.Figure` out. No I/O, no Streamlit.

Inputs are shaped like the run store's readers (`Store.runs()`,
`Store.metrics()`, `Store.layer_stats()`) and `LayerPlan.group_table()`.
Every chart colours a run by its strategy (`strategy_color`) and a layer
group by frozen/trainable (`FROZEN_COLOR`, `TRAINABLE_COLOR`), so the same
thing has the same colour on every page. Empty input gives a figure that
says so instead of raising.

One module per page family (base: colours, labels, layout; layers; curves;
results; seeing; lessons); callers use `from ui import charts; charts.X`.
"""

from __future__ import annotations

from ui.charts.base import (  # noqa: F401
    FROZEN_COLOR,
    FROZEN_LABEL,
    HEIGHT,
    NO_DATA,
    SCRATCH_COLOR,
    STRATEGY_COLORS,
    TRAINABLE_COLOR,
    TRAINABLE_LABEL,
    UNKNOWN_COLOR,
    _EXTRA_COLORS,
    _RunStyle,
    _SYMBOLS,
    _TEMPLATE,
    _config_value,
    _get,
    _human,
    _is_empty,
    _is_frozen,
    _legend_rows,
    _lr_text,
    _pct,
    _records,
    _run_styles,
    _style,
    _styled,
    empty_figure,
    plain,
    records,
    run_label,
    strategy_color,
)
from ui.charts.layers import (  # noqa: F401
    _epoch_slice,
    layer_map,
    layer_maps_side_by_side,
    layer_stats_map,
    thaw_timeline,
)
from ui.charts.curves import (  # noqa: F401
    _METRIC_TITLES,
    _accuracy_axis,
    _accuracy_range,
    _epoch_dtick,
    _metric_title,
    _sorted_runs,
    accuracy_vs_time,
    curves_grid,
    downsample,
    downsample_indices,
    ema,
    epoch_curves,
    lr_curve,
    rank_throughput,
    step_loss,
    time_to_accuracy,
)
from ui.charts.results import (  # noqa: F401
    KD_COLOR,
    ROLE_NAMES,
    STUDENT_COLOR,
    _ROLE_ORDER,
    _is_all_labels,
    _log_range,
    _number,
    _teacher_color,
    accuracy_vs_params,
    distill_comparison,
    labels_curve,
    role_color,
    test_accuracy_bars,
    topk_bars,
)
from ui.charts.seeing import (  # noqa: F401
    CLASS_COLORS,
    class_color,
    confusion_heatmap,
    embedding_scatter,
    lr_finder_curve,
    per_class_metric_bars,
)
from ui.charts.lessons import (  # noqa: F401
    SOURCE_COLOR,
    TARGET_COLOR,
    adapt_embedding,
    advisor_quadrants,
    skip_grad_norms,
    skip_losses,
)
from ui.charts.study import FIGURES as STUDY_FIGURES, study_figure  # noqa: F401,E402
from ui.charts.calibration import reliability_diagram  # noqa: F401,E402
