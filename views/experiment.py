"""Experiment: choose backbone, strategy and data; see the layer map; launch."""

from __future__ import annotations

import streamlit as st

from core import paths
from core.errors import TLabError
from core.runs import experiments
from core.service import forms, launching
from core.train import backbones, data, strategies, weights
from core.train.config import PRECISIONS, RunConfig
from ui import charts, seeing
from ui import settings as settings_ui
from ui.advisor import advisor_section
from ui.backbone_picker import pick_backbone
from ui.common import label, plain, store
from ui.folder import decode_section, folder_preview
from ui.recipe import augmentation_preview, recipe_widgets

DEFAULTS = RunConfig()  # the offline demo: Lite0 (bundled ImageNet weights), full fine-tuning, digits, 64 px, 3 epochs
UPLOAD, FOLDER = "upload a ZIP of class folders", "a folder on this machine"
SINGLE, RACE, SWEEP, DISTILL = "Single run", "Strategy race", "Labels-per-class sweep", "Knowledge distillation"
SEARCH = "Search"
# The RunConfig fields this form has a widget for; an uploaded settings file's other fields are kept as they are.
FORM_FIELDS = ("backbone", "strategy", "dataset", "epochs", "image_size", "batch_size", "lr", "labels_per_class", "seed",
               "device", "augment", "weights", "freeze_stages", "lr_decay", "unfreeze_every", "processes", "compile",
               "precision", "channels_last",
               "patience", "monitor", "label_smoothing", "class_weights", "sampler", "use_weights", "min_delta")

st.title("Transfer Learning Lab")
st.caption(
    "Pick a pretrained backbone, a way to fine-tune it and a dataset, then launch. A from-scratch twin trains "
    "beside it at the same budget, so you see what pretraining buys. Training runs in a background worker: "
    "close the tab whenever you like."
)

left, right = st.columns([5, 6], gap="large")

with left:
    settings_ui.upload_section(FORM_FIELDS, FOLDER, "race_strategies",
                               {experiments.RACE: RACE, experiments.SWEEP: SWEEP, experiments.DISTILL: DISTILL})
    st.subheader("Model")
    bb_names = list(backbones.REGISTRY)
    backbone = pick_backbone(DEFAULTS.backbone)
    try:
        spec = backbones.get(backbone)
    except TLabError as e:
        st.error(plain(e))
        st.stop()
    available = weights.availability(spec)
    st.caption(plain(spec.description))
    strat_names = list(strategies.REGISTRY)
    strategy = st.selectbox("Strategy", strat_names, index=strat_names.index(DEFAULTS.strategy), key="strategy",
                            format_func=lambda n: strategies.get(n).title)
    chosen = strategies.get(strategy)
    st.caption(chosen.description)

    weights_file = None
    if available == "download" and chosen.pretrained:
        where = weights.expected_file(spec)
        st.info(f"{plain(spec.title)}'s pretrained weights are not cached here: they download on first use when a "
                f"network is there. Offline, put `{where.name}` in `{where.parent}` or upload "
                "a weights file (a PyTorch state dict).")
        up = st.file_uploader("Weights file (.pt, .pth)", type=["pt", "pth", "bin"], key="weights_upload")
        if up is not None:
            try:
                weights_file = forms.check_weights_file(backbone, up.name, up.getvalue())
                st.success(f"{plain(up.name)} fits {spec.title}: training starts from it.")
            except TLabError as e:
                st.error(plain(e))

    st.subheader("Data")
    ds_names = list(data.REGISTRY) + [UPLOAD, FOLDER]
    ds_choice = st.selectbox("Dataset", ds_names, index=0, key="dataset",
                             format_func=lambda n: data.REGISTRY[n].title if n in data.REGISTRY else f"Your images: {n}")
    dataset = ds_choice
    if ds_choice in data.REGISTRY:
        st.caption(data.REGISTRY[ds_choice].description
                   + ("" if data.availability(data.REGISTRY[ds_choice]) != "download" else " Downloads on first use."))
    elif ds_choice == UPLOAD:
        up = st.file_uploader("ZIP with one folder per class", type=["zip"], key="zip_upload")
        dataset = None
        if up is not None:
            try:
                dataset = f"{data.FOLDER_PREFIX}{paths.save_upload('datasets', up.name, up.getvalue())}"
            except TLabError as e:
                st.error(plain(e))
    else:
        folder = st.text_input("Folder with one subfolder per class (or a .zip)", key="folder_path",
                               placeholder="/home/me/pictures/my_classes")
        dataset = f"{data.FOLDER_PREFIX}{folder.strip()}" if folder.strip() else None

    decode_box = folder_view = None
    if dataset and dataset.startswith(data.FOLDER_PREFIX):
        folder_view = folder_preview(dataset)
        if folder_view is not None:
            decode_box = st.container()  # filled below, once the image size is known
        else:
            dataset = None

    st.subheader("Budget")
    c1, c2, c3 = st.columns(3)
    epochs = c1.number_input("Epochs", 1, 200, DEFAULTS.epochs, key="epochs")
    image_size = c2.number_input("Image size (px)", 16, 512, DEFAULTS.image_size, step=16, key="image_size",
                                 help="Images are resized to this square size. 224 is what ImageNet backbones saw; 64 is quick on a CPU.")
    batch_size = c3.number_input("Batch size", 1, 1024, DEFAULTS.batch_size, key="batch_size")
    if size_problem := forms.image_size_problem(backbone, int(image_size)):
        st.warning(plain(size_problem))
    c1, c2, c3 = st.columns(3)
    lr = c1.number_input("Learning rate", 1e-6, 1.0, strategies.get(strategy).default_lr, format="%.5f",
                         key=f"lr_{strategy}", help="Each strategy has its own sensible default.")
    labels = c2.number_input("Labels per class (0 = all)", 0, 100000, 0, key="labels_per_class",
                             help="Keep only this many training images per class: where pretraining pays off most.")
    seed = c3.number_input("Seed", 0, 2**31 - 1, DEFAULTS.seed, key="seed")
    c1, c2, c3 = st.columns(3)
    n_body = len(spec.groups) - 2
    freeze_stages = c1.number_input("Freeze stages", 0, n_body, min(DEFAULTS.freeze_stages, n_body), key=f"freeze_stages_{backbone}",
                                    disabled="freeze_stages" not in chosen.uses, help="Partial: the stem and this many stages stay frozen.")
    lr_decay = c2.number_input("LR decay per group", 0.01, 1.0, DEFAULTS.lr_decay, key="lr_decay",
                               disabled="lr_decay" not in chosen.uses, help="Discriminative: LR factor from one group to the one below.")
    unfreeze_every = c3.number_input("Unfreeze every (epochs)", 1, 100, DEFAULTS.unfreeze_every, key="unfreeze_every",
                                     disabled="unfreeze_every" not in chosen.uses, help="Gradual: epochs between thawing one more group.")
    c1, c2 = st.columns(2)
    hw = forms.hardware()
    detected = hw.detected
    device = c1.selectbox("Device", ["auto", "cpu", "cuda", "mps"], key="device", help=f"Detected here: {detected}.",
                          format_func=lambda d: f"auto ({detected})" if d == "auto" else d)
    processes = c2.number_input("Processes / GPUs", 1, 64, hw.gpus, key="processes",
                                help=f"Train one run over this many processes with DDP (torchrun), one per GPU; "
                                     f"{hw.gpus if hw.cuda else 'no'} GPU(s) detected here. "
                                     "Batch size is the global batch, split evenly between them.")
    with_scratch = st.checkbox("Also train from scratch for comparison", True, key="with_scratch",
                               disabled=not chosen.pretrained,
                               help="A twin with random weights, same data and budget, in the same group.")
    compile_model = st.checkbox("Compile the model (torch.compile)", DEFAULTS.compile, key="compile",
                                help="Faster training steps after a slow start (compiling takes a minute or more): "
                                     "worth it on a GPU and for long runs, rarely for a short CPU run.")
    with st.expander("Advanced: precision and memory layout", expanded=False):
        auto_precision, auto_layout = forms.precision_defaults(device)
        where = "here" if device == "auto" else f"on {device}"
        c1, c2 = st.columns(2)
        precision = c1.selectbox("Precision", PRECISIONS, key="precision",
                                 format_func=lambda p: f"auto ({auto_precision} {where})" if p == "auto" else p,
                                 help="Autocast precision of the forward passes; the weights stay fp32. bf16 and fp16 "
                                      "are faster on a GPU; fp16 scales the loss against underflow. On a CPU without "
                                      "bf16 instructions they are slower than fp32.")
        channels_last = c2.selectbox("Memory layout", [None, True, False], key="channels_last",
                                     format_func=lambda v: (f"auto ({'channels_last' if auto_layout else 'NCHW'} {where})"
                                                            if v is None else "channels_last" if v else "NCHW"),
                                     help="channels_last (NHWC) suits a GPU's tensor cores and oneDNN on a CPU.")
    recipe = recipe_widgets(DEFAULTS)

cfg = settings_ui.with_extras(forms.config_from(dict(backbone=backbone, strategy=strategy, dataset=dataset, epochs=int(epochs),
                              image_size=int(image_size), batch_size=int(batch_size), lr=float(lr),
                              labels_per_class=int(labels) or None, seed=int(seed), device=device,
                              weights=weights_file, freeze_stages=int(freeze_stages), lr_decay=float(lr_decay),
                              unfreeze_every=int(unfreeze_every), processes=int(processes), compile=compile_model,
                              precision=precision, channels_last=channels_last, **recipe)), FORM_FIELDS)
if dataset is not None:
    if decode_box is not None:
        with decode_box:
            decode_section(dataset, cfg.image_size, folder_view.images)
    with left:
        augmentation_preview(cfg)

with right:
    advisor_section(cfg, dataset is not None)
    st.subheader("Layer map")
    preview = plan = None
    try:
        preview = forms.preview_plan(cfg)
        plan = preview.plan
    except TLabError as e:
        st.error(plain(e))
    if plan is not None:
        m1, m2, m3 = st.columns(3)
        m1.metric("Trainable parameters", f"{plan.trainable_params:,}")
        m2.metric("Frozen parameters", f"{plan.frozen_params:,}")
        m3.metric("Trainable share", f"{100 * plan.trainable_params / max(1, plan.total_params):.2f}%")
        st.plotly_chart(charts.layer_map(plan.group_table(), title=f"{spec.title} · {strategies.get(strategy).title}"),
                        width="stretch", key="layer_map_preview", config={"displayModeBar": False})
        thaw = preview.thaw()
        if len(thaw) > 1:
            st.caption("Trainable parameters as groups thaw — " + "; ".join(f"epoch {e}: {n:,}" for e, n in thaw))
        if preview.norm_note:
            st.caption(plain(preview.norm_note))

    st.subheader("What to run")
    mode = st.radio("Experiment", [SINGLE, RACE, SWEEP, SEARCH, DISTILL], key="mode", horizontal=True,
                    help="One run (with its scratch twin), a race of strategies, a labels-per-class sweep, "
                         "a hyperparameter search (Optuna, with pruning), or a student distilled from a finished "
                         "teacher run.")
    runs_to_launch: list[RunConfig] = []
    kind, side_by_side, problem, batch = "", False, None, None
    group_options: dict = {}
    if dataset is None:
        problem = "Choose your images first: upload a ZIP of class folders, or give a folder path."
    if mode == SINGLE:
        runs_to_launch, side_by_side = launching.with_scratch_twin(cfg, with_scratch)
        twin = len(runs_to_launch) > 1
        summary = (f"{strategies.get(strategy).title} of {spec.title} on {data.get(cfg.dataset).title if dataset else '…'}, "
                   f"{cfg.epochs} epoch(s) at {cfg.image_size} px"
                   + (f" over {cfg.processes} processes (global batch {cfg.batch_size})" if cfg.processes > 1 else "")
                   + ((", and the same from scratch beside it." if side_by_side else ", then the same from scratch.")
                      if twin else "."))
    elif mode == RACE:
        kind = experiments.RACE
        picked = st.multiselect("Strategies in the race", strat_names, default=strategies.race(),
                                format_func=lambda n: strategies.get(n).title, key="race_strategies")
        summary = f"{len(picked)} strategies on {spec.title}, same data, budget and seed, one after the other."
        group_options = dict(strategies=picked)
        try:
            runs_to_launch = experiments.race_configs(cfg, picked)
        except TLabError as e:
            problem = problem or str(e)
    elif mode == SWEEP:
        kind = experiments.SWEEP
        picked = st.multiselect("Strategies", strat_names, default=[strategy if chosen.pretrained else DEFAULTS.strategy, strategies.baseline().name],
                                format_func=lambda n: strategies.get(n).title, key="sweep_strategies")
        labels_pick = st.multiselect("Labels per class", ["1", "5", "10", "25", "50", "all"], default=["1", "5", "10", "all"],
                                     key="sweep_labels")
        c1, c2 = st.columns(2)
        seeds = c1.number_input("Seeds per point", 1, 10, 2, key="sweep_seeds")
        steps = c2.number_input("Steps per run", 1, 100000, 60, key="sweep_steps",
                                help="Every point gets the same number of optimisation steps (batches drawn with replacement).")
        try:
            labels_list = experiments.parse_labels(",".join(labels_pick))
            runs_to_launch = experiments.sweep_configs(cfg, picked, labels_list, int(seeds), int(steps))
        except TLabError as e:
            problem = problem or str(e)
        summary = f"{len(runs_to_launch)} runs of {int(steps)} steps each: test accuracy against labels per class."
        group_options = dict(strategies=picked, labels=labels_pick, seeds=int(seeds), steps=int(steps))
    elif mode == SEARCH:
        kind = "tune"
        pretrained = [n for n in strat_names if strategies.get(n).pretrained]
        picked = st.multiselect("Strategies to search", strat_names, key="search_strategies",
                                default=[n for n in ("full", "partial", "discriminative") if n in pretrained]
                                if chosen.pretrained else [strategies.baseline().name],
                                format_func=lambda n: strategies.get(n).title)
        c1, c2, c3 = st.columns(3)
        trials = c1.number_input("Trials", 2, 500, 12, key="search_trials",
                                 help="The study's total: searching again under the same name continues it.")
        minutes = c2.number_input("Time limit (min, 0 = none)", 0, 10080, 0, key="search_minutes",
                                  help="No new trial starts after this; those under way finish.")
        workers = c3.number_input("Trials at once", 1, 8, 1, key="search_workers")
        study_name = st.text_input("Study name", f"{backbone}-{cfg.dataset}".replace(":", "-").replace("/", "-")[:64],
                                   key="search_study")
        summary = (f"an Optuna search of up to {int(trials)} trials over the learning rate, weight decay, augmentation "
                   f"and each strategy's own knobs; trials below the median of earlier ones at the same epoch are pruned. "
                   f"Each trial is a run ({cfg.epochs} epoch(s) at {cfg.image_size} px); Compare draws the study.")
        group_options = dict(strategies=picked, trials=int(trials), study=study_name)
        if not picked:
            problem = problem or "Pick at least one strategy to search."
    else:
        kind = experiments.DISTILL
        all_runs = store().runs()
        finished = all_runs[all_runs["status"] == "finished"] if not all_runs.empty else all_runs
        summary = "a student learning from the teacher's soft targets, and the same student alone."
        if finished.empty:
            problem = problem or "Knowledge distillation needs a finished teacher run: train one first."
        else:
            by_id = {r["id"]: r for r in finished.to_dict("records")}
            teacher_id = st.selectbox("Teacher (a finished run)", list(by_id)[::-1], key="kd_teacher",
                                      format_func=lambda i: f"{label(by_id[i])} — test {by_id[i]['test_accuracy']:.3f}")
            c1, c2, c3 = st.columns(3)
            students = bb_names + ([backbone] if backbone not in bb_names else [])  # a timm model too
            student = c1.selectbox("Student", students, index=students.index("small_cnn"), key="kd_student",
                                   format_func=lambda n: backbones.get(n).title)
            temperature = c2.number_input("Temperature T", 0.1, 100.0, 4.0, key="kd_temperature")
            alpha = c3.number_input("alpha (soft-target weight)", 0.0, 1.0, 0.9, key="kd_alpha")
            try:
                runs_to_launch = experiments.distill_configs(store().run(teacher_id), student, float(temperature),
                                                             float(alpha))
            except TLabError as e:
                problem = problem or str(e)
            st.caption("The student trains on the teacher's dataset, split and budget.")
            group_options = dict(teacher=teacher_id, student=student, temperature=float(temperature), alpha=float(alpha))
    if problem is None and mode != SEARCH:
        try:
            batch = launching.prepare(runs_to_launch or [cfg], kind, side_by_side)
        except TLabError as e:
            problem = str(e)
    if problem:
        st.warning(plain(problem))
    seeing.lr_finder_section(cfg, f"lr_{strategy}", (1e-6, 1.0), problem)
    st.write(f"**Will train:** {plain(summary)}")
    settings_ui.download_section(cfg, runs_to_launch or [cfg], "" if mode == SEARCH else kind, dataset is None,
                                 command_kind=kind, **group_options)
    if mode == SEARCH and st.button("Start the search", type="primary", key="launch_search",
                                    disabled=problem is not None, width="stretch"):
        try:
            launching.start_search(cfg, picked, int(trials), study_name, float(minutes) * 60 or None, int(workers))
        except TLabError as e:
            st.error(plain(e))
        else:
            st.success(f"Search '{study_name}' started: its trials appear on Live as they are queued, and Compare "
                       f"draws the study (group tune-{study_name}).")
    if mode != SEARCH and st.button("Launch", type="primary", key="launch", disabled=problem is not None, width="stretch"):
        try:
            group, ids = launching.launch(batch, store())
        except TLabError as e:
            st.error(plain(e))
        else:
            st.session_state["live_runs"] = ids
            st.switch_page("views/live.py")
