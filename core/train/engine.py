"""The training loop: one loop for every strategy.

The engine reports through events (core.train.events); listeners (the run store, a progress bar)
subscribe. It never prints. Side effects are a checkpoint per epoch in the
run folder, written atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from core import faults
from core.errors import ConfigError, TLabError
from core.train import backbones, cache, data, strategies
from core.train.config import RunConfig
from core.train.distributed import SINGLE, Dist
from core.train.events import (EpochEnd, Event, LayerStats, Listener, Note, PlanChange, RunEnd, RunResult, RunStart,
                               Step, new_run_id)
from core.train.strategies import LayerPlan

log = logging.getLogger(__name__)

EVAL_BATCH = 256
# Frozen backbones: train the head on features computed once (and cached on
# disk). Off only to measure what that saves (bench/feature_cache.py).
FEATURE_CACHE = True


class Diverged(TLabError):
    pass


class Cancelled(Exception):
    pass


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for, but PyTorch sees no CUDA GPU here: choose auto or cpu.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' was asked for, but this machine has no Apple GPU available: choose auto or cpu.")
    return torch.device(name)


@contextlib.contextmanager
def head_removed(model: nn.Module, head_path: str):
    """Temporarily replace the head with Identity: the model then returns the
    features the head would see."""
    parent_path, _, leaf = head_path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    head = getattr(parent, leaf)
    setattr(parent, leaf, nn.Identity())
    try:
        yield head
    finally:
        setattr(parent, leaf, head)


class CheckpointWriteError(TLabError):
    pass


def save_atomic(obj: dict, path: Path) -> None:
    """Write to a temporary file, flush it to disk, then rename over the old
    one: a full disk or a read-only folder leaves the previous checkpoint whole."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch wraps some write errors in RuntimeError
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        why = getattr(e, "strerror", None) or " ".join(str(e).split())[:200] or type(e).__name__
        kept = "the previous checkpoint is intact" if path.exists() else "no earlier checkpoint exists"
        raise CheckpointWriteError(
            f"could not write the checkpoint {path} ({why}): {kept}. Free disk space or make the data folder "
            "writable, then resume the run.") from None


def out_of_memory_reason(cfg: RunConfig, where: str = "") -> str:
    """What to tell a person whose run ran out of (GPU) memory."""
    smaller = max(1, cfg.batch_size // 2)
    return (f"out of memory{' ' + where if where else ''} (batch size {cfg.batch_size}, image size {cfg.image_size} px): "
            f"try a smaller batch size (e.g. {smaller}) or image size, or a smaller backbone, then launch it again.")


def is_out_of_memory(e: BaseException) -> bool:
    if isinstance(e, torch.cuda.OutOfMemoryError):
        return True
    msg = str(e)
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def release_memory() -> None:
    """Give cached GPU memory back after a failed run, so the next one starts clean."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def lr_factor(step: int, total: int) -> float:
    """Linear warm-up over the first 3% of steps, then cosine to zero."""
    warm = max(1, int(0.03 * total))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


# --- the trainer ----------------------------------------------------------------


class Trainer:
    def __init__(self, cfg: RunConfig, run_dir: Path, run_id: str | None = None,
                 listeners: tuple[Listener, ...] = (), should_stop: Callable[[], bool] | None = None,
                 dist: Dist = SINGLE):
        self.cfg = cfg  # checked by the caller (the worker: core.runs.jobs.execute)
        self.dist = dist  # the other processes of this run, if any: see core/train/distributed.py
        self.run_id = run_id or new_run_id()
        self.run_dir = Path(run_dir)
        self.listeners = list(listeners)
        self.should_stop = should_stop or (lambda: False)
        self.spec = backbones.get(cfg.backbone)
        self.strategy = strategies.get(cfg.strategy)
        self.device = dist.device(resolve_device(cfg.device))
        self.cuda = self.device.type == "cuda"
        self._sources: dict[tuple[int, int], data.Batches] = {}

    def emit(self, event: Event) -> None:
        for listener in self.listeners:
            listener(event)

    # -- pieces --

    def _autocast(self):
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _prep(self, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
        x = data.batch_input(x.to(self.device, non_blocking=True), self.spec.mean, self.spec.std, g)
        return x.contiguous(memory_format=torch.channels_last) if self.cuda else x

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        x = data.normalise(x, self.spec.mean, self.spec.std)
        return x.contiguous(memory_format=torch.channels_last) if self.cuda else x

    @torch.inference_mode()
    def evaluate(self, model: nn.Module, split: data.Split, features: bool = False) -> tuple[float, float]:
        """(mean loss, accuracy) over a split; `features` when split.x holds cached features."""
        model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        count = torch.zeros((), device=self.device, dtype=torch.long)
        span = self.dist.shard(len(split))  # each process scores its share
        for xb, yb, _ in self._batches(split, EVAL_BATCH)(span=span):
            yb = yb.to(self.device)
            x = xb.to(self.device) if features else self._prep(xb)
            with self._autocast():
                logits = model(x).float()
            loss_sum += F.cross_entropy(logits, yb, reduction="sum")
            correct += (logits.argmax(1) == yb).sum()
            count += len(yb)  # fewer than the split when streaming met an unreadable file
        loss_sum, correct, count = self.dist.sum_(loss_sum), self.dist.sum_(correct), self.dist.sum_(count)
        n = max(1, int(count))
        return float(loss_sum) / n, float(correct) / n

    def _note_dropped(self, noted: int, where: str) -> int:
        """Say how many unreadable files streaming met since the last note."""
        dropped = sum(source.dropped for source in self._sources.values())
        if dropped > noted:
            self.emit(Note(f"skipped {dropped - noted} unreadable image file(s) {where}"))
        return dropped

    def _batches(self, split: data.Split, batch_size: int) -> data.Batches:
        """One batch source per split and batch size for the whole run: a
        streamed split keeps its DataLoader workers from epoch to epoch."""
        key = (id(split), batch_size)
        source = self._sources.get(key)
        if source is None or source.split is not split:
            source = self._sources[key] = data.Batches(split, batch_size, self.device)
        return source

    @torch.inference_mode()
    def _features(self, model: nn.Module, split: data.Split) -> data.Split:
        model.eval()
        start, stop = self.dist.shard(len(split))  # each process computes its share, then all gather them
        out, got = [], []
        with head_removed(model, self.spec.head):
            # an empty share still needs the feature width for the gather
            for xb, _, pos in self._batches(split, EVAL_BATCH)(span=(start, max(stop, start + 1))):
                with self._autocast():
                    out.append(model(self._prep(xb)).float())
                got.append(pos)
        if not out:  # a streamed split with nothing in this share: an empty batch gives the width
            with head_removed(model, self.spec.head), self._autocast():
                size = self.cfg.image_size
                out.append(model(torch.zeros((0, 3, size, size), device=self.device)).float())
            got.append(torch.zeros(0, dtype=torch.long))
        part, pos = torch.cat(out), torch.cat(got).to(self.device)
        # Rows by position in the share; an image streaming could not read stays marked missing.
        feats = torch.zeros((stop - start, part.shape[1]), device=self.device)
        present = torch.zeros(stop - start, device=self.device)
        keep = pos < stop
        feats[pos[keep] - start], present[pos[keep] - start] = part[keep], 1.0
        feats = self.dist.gather_rows(feats, len(split))
        present = self.dist.gather_rows(present[:, None], len(split))[:, 0] > 0
        index = split.index[present.cpu()] if split.index is not None else None
        return data.Split(feats[present], split.y.to(self.device)[present], index)

    def _cached_features(self, model: nn.Module, split: data.Split, data_key: str) -> tuple[data.Split, bool]:
        """Backbone features of a split, from the data folder's cache when a run
        before computed them for the same backbone weights, images, image size
        and device kind (so with the same precision); else computed and cached."""
        head_prefix = self.spec.head + "."
        key = {"backbone": self.spec.name,
               "weights": cache.tensors_digest((k, v) for k, v in model.state_dict().items() if not k.startswith(head_prefix)),
               "data": data_key, "images": cache.index_digest(split.index), "n": len(split),
               "image_size": self.cfg.image_size, "device": self.device.type, "bf16": self.cuda}
        hit = cache.load("features", key) if data_key else None
        if hit is not None and not (set(hit[0]) == {"x", "y", "index"} and len(hit[0]["x"]) == len(hit[0]["y"])):
            hit = None
        # Several processes use the cache only if every one of them found it.
        if self.dist.sync_flags([float(hit is None)])[0] == 0:
            t = hit[0]
            return data.Split(t["x"].to(self.device), t["y"].to(self.device), t["index"] if len(t["index"]) else None), True
        feats = self._features(model, split)
        if data_key and self.dist.is_main:
            index = feats.index if feats.index is not None else torch.empty(0, dtype=torch.long)
            cache.save("features", key, {"x": feats.x, "y": feats.y, "index": index})
        return feats, False

    def _compiled(self, module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        """torch.compile(module) for the training steps. If compiling fails at
        the first call (no C++ compiler for the CPU backend, an op the tracer
        can't handle), the run says so and goes on eagerly."""
        compiled = torch.compile(module)
        state = {"fn": compiled, "first": True}

        def call(x: torch.Tensor) -> torch.Tensor:
            if not state["first"]:
                return state["fn"](x)
            state["first"] = False
            try:
                return compiled(x)
            except torch._dynamo.exc.TorchDynamoException as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                log.warning("torch.compile failed, training eagerly: %s", first)
                self.emit(Note(f"torch.compile failed ({type(e).__name__}: {first}): training without it"))
                state["fn"] = module
                return module(x)

        return call

    def _group_params(self, model: nn.Module) -> dict[str, list[nn.Parameter]]:
        owner = backbones.group_of_parameters(self.spec, model)
        groups: dict[str, list[nn.Parameter]] = {g: [] for g in self.spec.group_names}
        for name, p in model.named_parameters():
            groups[owner[name]].append(p)
        return groups

    # -- the run --

    def run(self, resume_from: Path | None = None) -> RunResult:
        cfg, spec = self.cfg, self.spec
        t_start = time.perf_counter()
        torch.manual_seed(cfg.seed)
        dist = self.dist
        with dist.main_first():  # one download or decode into the data folder, the others then read it
            bundle = data.load(cfg.dataset, cfg.image_size, cfg.seed, cfg.labels_per_class, cfg.val_fraction, cfg.test_fraction)
        if len(bundle.train) < 1:
            raise ConfigError("The training set is empty.")
        model = backbones.create_model(spec, bundle.num_classes, cfg.image_size, self.strategy.pretrained, cfg.weights)
        model.to(self.device)
        if self.cuda:
            model.to(memory_format=torch.channels_last)
        self.model = model  # kept after run(): the trained weights and the last step's gradients
        plan = strategies.make_plan(spec, model, cfg, 0)
        dist.check_same("layer plan", plan.rows())
        optimizer = strategies.build_optimizer(spec, model, plan, cfg.weight_decay)
        groups = self._group_params(model)
        w0 = {g: [p.detach().clone() for p in ps] for g, ps in groups.items()}

        start_epoch, best_val, step = 1, None, 0
        # Rank 0 reads the checkpoint and hands it to the others: no shared folder needed for it.
        ckpt = dist.broadcast(torch.load(resume_from, map_location="cpu", weights_only=True)
                              if resume_from is not None and dist.is_main else None)
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            start_epoch = int(ckpt["epoch"]) + 1
            best_val, step = ckpt.get("best_val_accuracy"), int(ckpt.get("step", 0))
            w0 = {g: [t.to(self.device) for t in ts] for g, ts in ckpt["w0"].items()}
            plan = strategies.make_plan(spec, model, cfg, start_epoch - 1)
            strategies.apply_plan(spec, model, plan, optimizer)
            optimizer.load_state_dict(ckpt["optimizer"])

        # Move the (uint8) data to the device once: every epoch reads it from there.
        # (A folder too large for memory streams from its files instead.)
        for split in (bundle.train, bundle.val, bundle.test):
            if isinstance(split.x, torch.Tensor):
                split.x, split.y = split.x.to(self.device), split.y.to(self.device)

        use_cache = FEATURE_CACHE and self.strategy.feature_cache and not cfg.augment
        head = model.get_submodule(spec.head)
        if use_cache:
            t0 = time.perf_counter()
            feats, reused = {}, 0
            for k in ("train", "val", "test"):
                feats[k], hit = self._cached_features(model, getattr(bundle, k), bundle.key)
                reused += len(feats[k]) if hit else 0
            n_feats = sum(len(f) for f in feats.values())
            how = (f"read from the data folder's cache for all {n_feats} images" if reused == n_feats else
                   f"computed once for {n_feats - reused} images" + (f" (cached for {reused})" if reused else ""))
            self.emit(Note(f"feature cache: backbone features {how} in {time.perf_counter() - t0:.1f}s; "
                           "the head trains on the cache"))
            log.info("feature extraction without augmentation: training the head on cached features")
            train_split = feats["train"]
            net = head  # what trains: the model, or the head on cached features
        else:
            train_split = bundle.train
            net = model
        train_y = train_split.y

        def wrapped():
            """What the steps call: the net, under DDP when several processes
            train it, compiled when asked."""
            module = dist.wrap(net, self.device)
            return self._compiled(module) if cfg.compile else module

        fwd = wrapped()
        if cfg.compile:
            self.emit(Note("torch.compile is on: the first steps include compilation"))

        n_train = len(train_y)
        if cfg.steps:  # a fixed budget of steps, batches drawn with replacement
            bs = cfg.batch_size
            steps_per_epoch = math.ceil(cfg.steps / cfg.epochs)
        else:
            bs = min(cfg.batch_size, n_train)
            bs -= bs % dist.world_size  # a global batch splits evenly over the processes
            steps_per_epoch = max(1, n_train // max(1, bs))  # drop the ragged last batch: BatchNorm needs > 1 sample
        total_steps = steps_per_epoch * cfg.epochs
        if bs < dist.world_size or bs % dist.world_size:
            raise ConfigError(f"batch size {bs} does not split evenly over {dist.world_size} processes: "
                              f"use a multiple of {dist.world_size}.")
        local_bs = bs // dist.world_size  # this process's slice of every global batch
        local = slice(dist.rank * local_bs, (dist.rank + 1) * local_bs)
        train_batches = self._batches(train_split, local_bs)

        teacher, soft_targets = None, None
        if cfg.teacher:
            from core.train import distill

            teacher = distill.load_teacher(cfg.teacher)
            distill.check_teacher(teacher, bundle.class_names)
            teacher.model.to(self.device)
            if not cfg.augment:
                soft_targets, hit = distill.cached_teacher_logits(teacher, bundle.train, bundle.key, self.device)
                self.emit(Note(f"distilling from run {cfg.teacher} ({teacher.spec.title}): its logits for "
                               f"{len(soft_targets)} training images {'read from the cache' if hit else 'computed once'}, "
                               f"T={cfg.temperature:g}, alpha={cfg.alpha:g}"))
        self.emit(RunStart(self.run_id, cfg, str(self.device), tuple(bundle.class_names),
                           {"train": len(bundle.train), "val": len(bundle.val), "test": len(bundle.test),
                            "skipped": bundle.skipped},
                           plan, steps_per_epoch, start_epoch, dist.world_size))
        if not cfg.steps and cfg.batch_size > n_train:
            self.emit(Note(f"batch size {cfg.batch_size} is larger than the {n_train} training images: "
                           f"each step uses all {n_train}"))
        if bundle.skipped:
            self.emit(Note(f"skipped {bundle.skipped} unreadable file(s), e.g. {bundle.skipped_examples[0]}"))

        result = RunResult(self.run_id, "running", epochs=start_epoch - 1, device=str(self.device),
                           trainable_params=plan.trainable_params, total_params=plan.total_params,
                           feature_cache=use_cache, best_val_accuracy=best_val, world_size=dist.world_size)
        if dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        ckpt_path = self.run_dir / "checkpoint.pt"
        # On the training device: drawing augmentation parameters then costs no
        # host-to-device copy (a stream sync on CUDA) per batch.
        aug_gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 7919) if cfg.augment else None
        aug_stream = cfg.seed * 1_000_003 + 7919 * dist.rank  # each process augments its own slice differently
        images_seen, train_seconds, dropped_noted = 0, 0.0, 0
        status, reason = "finished", ""
        try:
            for epoch in range(start_epoch, cfg.epochs + 1):
                new_plan = strategies.make_plan(spec, model, cfg, epoch - 1)
                if new_plan.group_table() != plan.group_table():
                    plan = new_plan
                    strategies.apply_plan(spec, model, plan, optimizer)
                    fwd = wrapped()  # DDP syncs the parameters trainable when it was built
                    self.emit(PlanChange(epoch, plan))
                result.trainable_params = max(result.trainable_params, plan.trainable_params)
                if use_cache:
                    head.train()
                else:
                    strategies.set_train_mode(spec, model, plan)
                if aug_gen is not None:  # resumable: the augmentation stream depends only on seed and epoch
                    aug_gen.manual_seed(aug_stream + epoch)
                epoch_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
                if cfg.steps:
                    order = torch.randint(n_train, (steps_per_epoch * bs,), generator=epoch_gen)
                else:
                    order = torch.randperm(n_train, generator=epoch_gen)
                # This process's slice of every global batch, in step order.
                order = order[: steps_per_epoch * bs].view(steps_per_epoch, bs)[:, local].reshape(-1).to(self.device)
                grad_sq = {g: torch.zeros((), device=self.device) for g in groups}
                loss_sum = torch.zeros((), device=self.device)
                correct = torch.zeros((), device=self.device, dtype=torch.long)
                seen = 0
                t_epoch = time.perf_counter()
                log_every = 10 if self.cuda else 1
                window_loss = torch.zeros((), device=self.device)
                t_window, window_imgs = time.perf_counter(), 0
                for i, (xraw, yb, idx) in enumerate(train_batches(order)):
                    if not dist.enabled and self.should_stop():  # several processes agree on stopping below
                        raise Cancelled()
                    t_logits = None
                    if use_cache:
                        xb = xraw
                    elif teacher is not None and soft_targets is None:  # augmented: the teacher sees the same crop
                        xa = data.augment(data.to_unit(xraw), aug_gen)
                        xb = self._normalise(xa)
                        with torch.inference_mode():
                            t_logits = teacher.model(distill.teacher_input(xa, teacher)).float()
                    else:
                        xb = self._prep(xraw, aug_gen)
                    if soft_targets is not None:
                        t_logits = soft_targets[idx]
                    factor = lr_factor(step, total_steps)
                    for pg in optimizer.param_groups:
                        pg["lr"] = pg["initial_lr"] * factor
                    with self._autocast():
                        logits = fwd(xb).float()
                    if t_logits is not None:
                        loss = distill.kd_loss(logits, t_logits.clone(), yb, cfg.temperature, cfg.alpha)
                    else:
                        loss = F.cross_entropy(logits, yb)
                    loss = faults.fire("loss", loss, epoch=epoch, step=step + 1, run_id=self.run_id)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    for g, ps in groups.items():
                        grads = [p.grad for p in ps if p.grad is not None]
                        if grads:
                            grad_sq[g] += torch.stack(torch._foreach_norm(grads)).square().sum().sqrt()
                    optimizer.step()
                    step += 1
                    seen += len(yb)
                    window_imgs += len(yb)
                    loss_d = loss.detach()
                    loss_sum += loss_d * len(yb)
                    window_loss += loss_d
                    correct += (logits.detach().argmax(1) == yb).sum()
                    if step % log_every == 0 or i == steps_per_epoch - 1:
                        n_in_window = (i % log_every) + 1 if i == steps_per_epoch - 1 else log_every
                        now = time.perf_counter()
                        rate = window_imgs / max(now - t_window, 1e-9)
                        # One small all-reduce: the loss of every process, rank 0's stop request, each rate.
                        rates = [0.0] * dist.world_size
                        rates[dist.rank] = rate
                        stop = dist.enabled and self.should_stop()
                        synced = dist.sync_flags([float(window_loss), float(stop), *rates])
                        mean_loss = synced[0] / dist.world_size / n_in_window
                        if not math.isfinite(mean_loss):
                            raise Diverged(
                                f"loss became {mean_loss} at epoch {epoch}, step {step}: "
                                f"lower the learning rate (it was {strategies.base_lr(cfg):g})."
                            )
                        rates = tuple(synced[2:])
                        self.emit(Step(epoch, step, mean_loss, optimizer.param_groups[-1]["lr"], sum(rates),
                                       rates if dist.enabled else ()))
                        window_loss.zero_()
                        t_window, window_imgs = now, 0
                        if synced[1]:
                            raise Cancelled()
                epoch_seconds = time.perf_counter() - t_epoch
                if dist.enabled:  # the epoch's metrics are over every process's images
                    totals = dist.sum_(torch.stack([loss_sum.double(), correct.double(),
                                                    torch.tensor(float(seen), dtype=torch.float64, device=self.device)]))
                    loss_sum, correct, seen = totals[0], totals[1], int(totals[2])
                images_seen += seen
                train_seconds += epoch_seconds
                if use_cache:
                    val_loss, val_acc = self.evaluate(head, feats["val"], features=True)
                else:
                    val_loss, val_acc = self.evaluate(model, bundle.val)
                train_loss = float(loss_sum) / max(1, seen)
                best_val = val_acc if best_val is None else max(best_val, val_acc)
                result.epochs, result.val_accuracy, result.best_val_accuracy = epoch, val_acc, best_val
                self.emit(EpochEnd(epoch, train_loss, float(correct) / max(1, seen), val_loss, val_acc,
                                   epoch_seconds, seen / max(epoch_seconds, 1e-9)))
                dropped_noted = self._note_dropped(dropped_noted, f"in epoch {epoch}")
                if not dist.is_main:
                    continue  # rank 0 alone reports layer stats and writes the checkpoint
                self.emit(LayerStats(epoch, self._layer_rows(plan, groups, w0, grad_sq, steps_per_epoch)))
                save_atomic({
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "config": dataclasses.asdict(cfg), "epoch": epoch, "step": step,
                    "best_val_accuracy": best_val, "class_names": list(bundle.class_names),
                    "backbone": spec.name, "image_size": cfg.image_size,
                    "w0": {g: [t.cpu() for t in ts] for g, ts in w0.items()},
                }, ckpt_path)
                result.checkpoint = str(ckpt_path)
            if use_cache:
                result.test_loss, result.test_accuracy = self.evaluate(head, feats["test"], features=True)
            else:
                result.test_loss, result.test_accuracy = self.evaluate(model, bundle.test)
            self._note_dropped(dropped_noted, "in the test set")
        except Cancelled:
            status, reason = "cancelled", "stopped by request"
        except (Diverged, CheckpointWriteError) as e:
            status, reason = "failed", str(e)
        except Exception as e:
            if not is_out_of_memory(e):
                raise
            status, reason = "failed", out_of_memory_reason(cfg, f"at epoch {result.epochs + 1}")
        self._sources.clear()  # a streamed split's DataLoader workers end here, not with the process
        result.status, result.reason = status, reason
        result.seconds = time.perf_counter() - t_start
        result.images_per_second = images_seen / train_seconds if train_seconds else 0.0
        self.emit(RunEnd(status, reason, result))
        return result

    def _layer_rows(self, plan: LayerPlan, groups, w0, grad_sq, steps: int) -> tuple[dict, ...]:
        rows = []
        with torch.no_grad():
            for r in plan.group_table():
                g = r["group"]
                ps, p0 = groups[g], w0[g]
                diff = torch.stack([torch.linalg.vector_norm((p - q).float()) for p, q in zip(ps, p0)]).square().sum().sqrt()
                base = torch.stack([torch.linalg.vector_norm(q.float()) for q in p0]).square().sum().sqrt()
                rows.append({
                    "group": g, "frozen": bool(r["frozen"]), "lr": r["lr"], "params": r["params"],
                    "grad_norm": float(grad_sq[g]) / steps,
                    "weight_change": float(diff / base) if float(base) > 0 else 0.0,
                })
        return tuple(rows)


def train(cfg: RunConfig, run_dir: Path | None = None, listeners: tuple[Listener, ...] = (),
          should_stop: Callable[[], bool] | None = None, run_id: str | None = None) -> RunResult:
    """Train one run in this process and return its result."""
    from core import paths

    run_id = run_id or new_run_id()
    return Trainer(cfg, run_dir or paths.run_dir(run_id), run_id, listeners, should_stop).run()
