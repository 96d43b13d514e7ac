"""The pieces a training run is made of, below its phases (core.train.engine):
the device and its precision, batches, evaluation, the frozen backbone's
feature cache, torch.compile with an eager fallback, per-group parameters and
the per-epoch layer statistics. `engine.Trainer` is a `Runner` with a `run`."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from core.train import backbones, cache, data, strategies
from core.train.backbones import head_removed
from core.train.config import RunConfig
from core.train.device import AUTOCAST_DTYPES, channels_last_of, precision_of, resolve_device
from core.train.distributed import SINGLE, Dist
from core.train.events import Event, Listener, Note, new_run_id
from core.train.strategies import LayerPlan

log = logging.getLogger(__name__)

EVAL_BATCH = 256


class Runner:
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
        # The same code on every device: a CPU run in bf16 or channels_last takes the GPU's path.
        self.precision = precision_of(cfg, self.device)
        self.amp_dtype = AUTOCAST_DTYPES[self.precision]
        self.channels_last = channels_last_of(cfg, self.device)
        self._sources: dict[tuple[int, int], data.Batches] = {}
        self._body_digest: str | None = None
        self._owners: dict[tuple[int, ...], torch.Tensor] = {}  # each gradient's group, per set of trainable tensors

    def emit(self, event: Event) -> None:
        for listener in self.listeners:
            listener(event)

    # -- pieces --

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16's loss scaling (its small range underflows gradients); None in fp32 and bf16."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def _optimise(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None, loss: torch.Tensor,
                  groups: dict[str, list[nn.Parameter]], grad_sq: torch.Tensor) -> None:
        """Backward, each group's gradient norm added to `grad_sq` (one entry
        per group, in `groups`' order: the layer stats), optimizer step; under
        fp16 through the scaler, which skips a step whose gradients overflowed
        (that step adds no norm)."""
        optimizer.zero_grad(set_to_none=True)
        (loss if scaler is None else scaler.scale(loss)).backward()
        if scaler is not None:
            scaler.unscale_(optimizer)
        grads, owners = [], []
        for i, ps in enumerate(groups.values()):
            for p in ps:
                if p.grad is not None:
                    grads.append(p.grad)
                    owners.append(i)
        if grads:  # one norm per tensor, summed per group by one index_add: a few ops a step, not a few per group
            owner = self._owners.get(tuple(owners))
            if owner is None:
                owner = self._owners[tuple(owners)] = torch.tensor(owners, device=grad_sq.device)
            norm = torch.zeros_like(grad_sq).index_add_(0, owner, torch.stack(torch._foreach_norm(grads)).square()).sqrt_()
            grad_sq += norm if scaler is None else torch.nan_to_num(norm, nan=0.0, posinf=0.0)
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return self._layout(data.batch_input(x.to(self.device, non_blocking=True), self.spec.mean, self.spec.std))

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return self._layout(data.normalise(x, self.spec.mean, self.spec.std))

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

    @torch.inference_mode()
    def logits(self, model: nn.Module, split: data.Split, features: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, labels) of a whole split, on the CPU, in this process alone (no collective)."""
        model.eval()
        out, ys = [], []
        for xb, yb, _ in self._batches(split, EVAL_BATCH)():
            x = xb.to(self.device) if features else self._prep(xb)
            with self._autocast():
                out.append(model(x).float().cpu())
            ys.append(yb.cpu())
        if not out:
            return torch.zeros((0, 0)), torch.zeros(0, dtype=torch.long)
        return torch.cat(out), torch.cat(ys)

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
        device kind and precision; else computed and cached."""
        head_prefix = self.spec.head + "."
        if self._body_digest is None:  # the frozen body's identity: hashed once for the run's three splits
            self._body_digest = cache.tensors_digest((k, v) for k, v in model.state_dict().items()
                                                     if not k.startswith(head_prefix))
        key = {"backbone": self.spec.name, "weights": self._body_digest,
               "data": data_key, "images": cache.index_digest(split.index), "n": len(split),
               "image_size": self.cfg.image_size, "device": self.device.type, "bf16": self.precision == "bf16"}
        if self.precision == "fp16":  # (a key without it is what every cache before fp16 existed was written under)
            key["fp16"] = True
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

    def _layer_rows(self, plan: LayerPlan, groups, w0, grad_sq, steps: int) -> tuple[dict, ...]:
        rows, order = [], list(groups)
        with torch.no_grad():
            for r in plan.group_table():
                g = r["group"]
                ps, p0 = groups[g], w0[g]
                diff = torch.stack([torch.linalg.vector_norm((p - q).float()) for p, q in zip(ps, p0)]).square().sum().sqrt()
                base = torch.stack([torch.linalg.vector_norm(q.float()) for q in p0]).square().sum().sqrt()
                rows.append({
                    "group": g, "frozen": bool(r["frozen"]), "lr": r["lr"], "params": r["params"],
                    "grad_norm": float(grad_sq[order.index(g)]) / steps,
                    "weight_change": float(diff / base) if float(base) > 0 else 0.0,
                })
        return tuple(rows)
