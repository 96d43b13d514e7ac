"""One run over several processes, with PyTorch's own stack: `torchrun` starts
the processes (one per GPU, or a few on a CPU), `torch.distributed` connects
them (NCCL between GPUs, gloo on CPUs) and `DistributedDataParallel` averages
the gradients. This module holds the process-group plumbing the engine and
the jobs need: who am I, the collectives, DDP wrapping, the rank-0 gate.

The rules every rank follows:
- `batch_size` is the global batch; each of the N ranks takes its 1/N slice
  of every global batch, so the data order, the number of steps and the
  learning rate (which is for the global batch) do not depend on N.
- Rank 0 alone writes the run store, the checkpoints and the `--json` summary,
  after the metrics are reduced across ranks.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import sys
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from core.errors import ConfigError, TLabError

log = logging.getLogger(__name__)

# How long a rank waits in a collective for the others before giving up: a
# rank that died is noticed at once (its sockets close); this bounds a hung one.
TIMEOUT_ENV = "TLAB_DIST_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 300.0


class PeerLost(TLabError):
    """Another process of the run stopped or stopped answering."""


class Terminated(BaseException):
    """torchrun (or a scheduler) sent SIGTERM: stop, keep the last checkpoint.
    A BaseException, so no `except Exception` on the way swallows it."""


@dataclass
class Dist:
    """This process's place in the run. World size 1 (no process group) is the
    ordinary single-process run, and every method then is a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str = ""
    _control: object = field(default=None, repr=False)  # a gloo group for CPU-side flags when the backend is NCCL

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- devices and models --

    def device(self, device: torch.device) -> torch.device:
        """The device this rank trains on: its own GPU under torchrun."""
        if self.enabled and device.type == "cuda":
            if self.local_rank >= torch.cuda.device_count():
                raise ConfigError(f"torchrun started {self.local_world_size} processes on this machine but it has "
                                  f"{torch.cuda.device_count()} GPU(s): use --nproc-per-node {torch.cuda.device_count()}.")
            return torch.device("cuda", self.local_rank)
        return device

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """DDP around `module`. Parameters frozen at this moment are left out of
        the gradient all-reduce, so call it again when the plan changes."""
        if not self.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        return DDP(module, device_ids=ids, output_device=device.index if ids else None)

    # -- collectives --

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (pickled: for small things, or once)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self._control)
        return box[0]

    def check_same(self, what: str, value) -> None:
        """Every rank must agree with rank 0 on `value` (settings, the layer plan)."""
        ref = self.broadcast(value)
        if ref != value:
            raise ConfigError(f"process {self.rank} of the run has a different {what} than process 0: "
                              "start every process with the same command and the same code.")

    def sum_(self, t: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks."""
        if self.enabled:
            dist.all_reduce(t)
        return t

    def sync_flags(self, values: list[float]) -> list[float]:
        """Sum a few numbers (loss, a stop flag, per-rank rates) over ranks in one
        small all-reduce on the CPU: for NCCL runs through the gloo control
        group, so agreeing on them never touches the GPU stream."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, group=self._control)
        return t.tolist()

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous share [start, stop) of n items."""
        per = -(-n // self.world_size)
        return min(n, self.rank * per), min(n, (self.rank + 1) * per)

    def gather_rows(self, part: torch.Tensor, n: int) -> torch.Tensor:
        """Every rank's `shard(n)` rows, in order: the whole (n, ...) tensor on every rank."""
        if not self.enabled:
            return part
        per = -(-n // self.world_size)
        padded = part.new_zeros((per, *part.shape[1:]))
        padded[: len(part)] = part
        out = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(out, padded)
        return torch.cat(out)[:n]

    @contextlib.contextmanager
    def main_first(self):
        """Rank 0 does it first (a download, a cache), then the others, which find it done."""
        if self.enabled and not self.is_main:
            dist.barrier(group=self._control)
        yield
        if self.enabled and self.is_main:
            dist.barrier(group=self._control)

    def close(self, peers_alive: bool = True) -> None:
        """Leave the group together: a process that leaves while another still
        talks to it is aborted by the backend."""
        if not (self.enabled and dist.is_initialized()):
            return
        if peers_alive:
            try:
                dist.barrier(group=self._control)
            except Exception:  # a peer is gone already: nothing left to wait for
                peers_alive = False
        if peers_alive:
            dist.destroy_process_group()


SINGLE = Dist()
_current = SINGLE


def current() -> Dist:
    return _current


def under_torchrun() -> bool:
    """Started by torchrun (or anything setting its environment) with more than one process?"""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def timeout_seconds() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT_SECONDS
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV} must be a number of seconds (got {raw!r}).") from None


def init(device_name: str) -> Dist:
    """Join the process group torchrun describes in the environment (RANK,
    WORLD_SIZE, MASTER_ADDR...): NCCL when training on CUDA, gloo otherwise.
    Returns SINGLE when not under torchrun."""
    global _current
    if not under_torchrun():
        return SINGLE
    if _current.enabled:
        return _current
    env = os.environ
    rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
    local_rank = int(env.get("LOCAL_RANK", "0"))
    local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if device_name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for, but PyTorch sees no CUDA GPU here: choose auto or cpu.")
    timeout = datetime.timedelta(seconds=timeout_seconds())
    # Before the group exists, not after: DDP's constructor imports torch.distributed.nn.functional, whose
    # functions take `group=group.WORLD` as a default argument, read at import. Imported once the group
    # exists, they hold the world group for good, so destroy_process_group can't end it: its gloo threads
    # live on into interpreter exit, where one that touches a Python object aborts the process
    # ("terminate called without an active exception": seen on rank 1 in 2 of 22 finished runs under load).
    import torch.distributed.nn.functional  # noqa: F401
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"torchrun started {local_world} processes on this machine but it has "
                              f"{torch.cuda.device_count()} GPU(s): use --nproc-per-node {torch.cuda.device_count()}.")
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", timeout=timeout, device_id=torch.device("cuda", local_rank))
        control = dist.new_group(backend="gloo", timeout=timeout)
        backend = "nccl"
    else:
        dist.init_process_group("gloo", timeout=timeout)
        control, backend = None, "gloo"
        # CPU ranks on one machine share its cores (torchrun would give each one thread).
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:
            cores = os.cpu_count() or 1
        if env.get("OMP_NUM_THREADS", "1") == "1":  # unset, or torchrun's default of 1
            torch.set_num_threads(max(1, cores // local_world))
    _current = Dist(rank, world, local_rank, local_world, backend, control)
    if rank != 0:
        logging.getLogger("core").setLevel(logging.WARNING)
    log.info("process %d of %d (%s, local rank %d)", rank, world, backend, local_rank)
    return _current


def shutdown() -> None:
    global _current
    _current.close()
    _current = SINGLE


_sigterm_raised = False


def on_sigterm() -> None:
    """torchrun stops the other processes with SIGTERM when one fails: turn it
    into an exception, so the run is recorded as interrupted, not left running.
    Only the first SIGTERM raises: a second one must not interrupt the
    recording of the first (jobs.execute records again if the first does)."""
    def handler(signum, frame):
        global _sigterm_raised
        if _sigterm_raised:
            log.warning("signal %d again: already stopping", signum)
            return
        _sigterm_raised = True
        raise Terminated(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def is_peer_failure(e: BaseException) -> bool:
    """Did this error come from losing another rank (closed socket, timeout)?"""
    if isinstance(e, (PeerLost, Terminated)):
        return True
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and any(s in text for s in (
        "Connection closed by peer", "Connection reset by peer", "Broken pipe", "Timed out", "timed out",
        "gloo", "Gloo", "NCCL", "ProcessGroup"))


def torchrun_command(nproc: int, module_args: list[str], standalone: bool = True) -> list[str]:
    """`torchrun --standalone --nproc-per-node N -m core ...` with this Python."""
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if standalone:
        cmd.append("--standalone")
    return [*cmd, "--nproc-per-node", str(nproc), "-m", "core", *module_args]


def detected_gpus() -> int:
    """What the Experiment page offers by default: the GPUs here, 1 without any."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 1
