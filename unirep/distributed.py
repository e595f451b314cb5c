"""The processes one run executes in, on Lightning Fabric, and the few collectives the pipeline needs.

`launch_world(accelerator, devices, strategy, num_nodes)` builds a `lightning.fabric.Fabric` and calls its
`launch()`: Lightning's launcher re-runs the command once per device (as `Trainer(strategy="ddp")` does), or, under
SLURM or torchrun, joins the processes the scheduler started (Lightning reads SLURM_NTASKS, SLURM_PROCID,
SLURM_LOCALID, SLURM_NODEID, or RANK / WORLD_SIZE / LOCAL_RANK). A one-device setting builds nothing: a run of one
process executes exactly as before. A Lightning Trainer created later in the same processes (fine-tuning, source
training) finds the process group made here and uses it instead of launching again.

The collectives are torch.distributed's under that group: broadcasts from global rank 0, gathers to every rank.
`World.on_zero` (rank 0 computes, everyone gets the value) and `World.each` (every rank computes its part, everyone
gets all parts) also carry exceptions, so a bad input found on one rank fails every rank with the same one-line
error instead of leaving the others waiting in a collective.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np

from unirep.errors import ConfigError

T = TypeVar("T")

# How long a rank waits in one collective. Torch's default (30 min) is too short for a gather that waits for the
# slowest job of a (backbone, task) - a 45-C linear sweep on a large task, or rank 0 waiting for another run's
# records lock. A rank that dies closes its sockets, and the others fail at once whatever this says.
COLLECTIVE_TIMEOUT = timedelta(hours=12)
# Strategies whose processes Lightning starts by re-running the command (or a scheduler starts): the pipeline runs
# top to bottom in each. Spawn-based ones would need the pipeline as a function; model-sharding ones (FSDP,
# DeepSpeed) shard parameters, which a frozen forward pass does not need.
SCRIPT_STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_false", "ddp_find_unused_parameters_true")


@dataclass(frozen=True)
class WorldSettings:
    """What `launch_world` is asked for, and the settings' names in the config (for error messages)."""

    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    where: str = ""  # config prefix of the keys in messages: "" (eval), "trainer." (source training)

    @property
    def single(self) -> bool:
        return self.devices == 1 and self.num_nodes == 1 and self.strategy in ("auto", "single_device")


class World:
    """Rank, size and collectives of the processes of a run; `World()` is the one process of a local run."""

    def __init__(self, rank: int = 0, size: int = 1, local_rank: int = 0, device=None):
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.device = device  # the rank's own torch.device (None: not chosen by a launcher)

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_zero(self) -> bool:
        return self.rank == 0

    def __repr__(self) -> str:
        return f"World(rank={self.rank}, size={self.size}, device={self.device})"

    def shard(self, n: int, rank: int | None = None) -> range:
        """This rank's contiguous part of `n` items: parts differ by at most one and, in rank order, are 0..n-1."""
        rank = self.rank if rank is None else rank
        return range(rank * n // self.size, (rank + 1) * n // self.size)

    def owner(self, index: int) -> int:
        """The rank that runs job `index` of a round-robin deal."""
        return index % self.size

    # Collectives. All of them must be called by every rank, in the same order.
    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, obj: T) -> T:
        """Global rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_zero else None]
        dist.broadcast_object_list(box, src=0, device=self._collective_device())
        return box[0]

    def gather(self, obj: T) -> list[T]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.size
        dist.all_gather_object(gathered, obj)
        return gathered

    def gather_rows(self, rows: np.ndarray) -> np.ndarray:
        """Every rank's `rows` concatenated in rank order (one tensor all_gather: each part padded to the longest,
        the padding stripped after; no row appears twice)."""
        if not self.distributed:
            return rows
        import torch
        import torch.distributed as dist

        lengths = self.gather(len(rows))
        device = self._collective_device()
        part = torch.zeros((max(lengths), *rows.shape[1:]), dtype=torch.from_numpy(rows[:0]).dtype, device=device)
        part[:len(rows)] = torch.from_numpy(np.ascontiguousarray(rows)).to(device)
        parts = [torch.empty_like(part) for _ in range(self.size)]
        dist.all_gather(parts, part)
        return np.concatenate([p[:n].cpu().numpy() for p, n in zip(parts, lengths, strict=True)])

    def on_zero(self, compute: Callable[[], T]) -> T:
        """`compute()` run on global rank 0 only, its value (or its exception, raised) on every rank."""
        if not self.distributed:
            return compute()
        outcome = _attempt(compute) if self.is_zero else None
        return _unwrap([self.broadcast(outcome)])[0]

    def each(self, compute: Callable[[], T]) -> list[T]:
        """`compute()` run on every rank; all ranks' values in rank order on every rank. If any rank raised, every
        rank raises the lowest such rank's exception (so all stop with the same message)."""
        if not self.distributed:
            return [compute()]
        return _unwrap(self.gather(_attempt(compute)))

    def _collective_device(self):
        import torch
        import torch.distributed as dist

        if dist.get_backend() == "nccl":  # NCCL moves CUDA tensors only
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


def _attempt(compute: Callable[[], T]) -> tuple[bool, Any]:
    try:
        return True, compute()
    except Exception as exc:  # sent to the other ranks, which raise it too
        try:
            pickle.dumps(exc)
        except Exception:
            exc = RuntimeError(f"{type(exc).__name__}: {exc}")
        return False, exc


def _unwrap(outcomes: list[tuple[bool, Any]]) -> list:
    for ok, value in outcomes:
        if not ok:
            raise value
    return [value for _, value in outcomes]


_current: tuple[WorldSettings, World] | None = None


def current_world() -> World:
    """The world launched in this process (a one-process `World()` when none was)."""
    return _current[1] if _current is not None else World()


def launch_world(settings: WorldSettings) -> World:
    """Start (or join) the processes `settings` asks for and return this process's place among them.

    One device on one node: `World()`, nothing launched. Otherwise a Fabric with these settings is launched; its
    launcher re-runs the command once per device, so the caller must call this after every check that can refuse
    the input (a bad config then fails once, in one process) and before any work. A later call in the same process
    (another section of `unirep run`) joins the world already made, as it does the processes a Lightning Trainer
    started earlier (source training with `trainer.strategy=ddp`): with single-device settings, or settings for as
    many processes; another process count is refused.

    Raises ConfigError (one line) for settings Lightning refuses or the pipeline cannot run under.

    Example:
        >>> world = launch_world(WorldSettings(accelerator="cpu", devices=2, strategy="ddp"))
        >>> world.rank, world.size   # (0, 2) here, (1, 2) in the copy of the command Lightning started
    """
    global _current
    import torch.distributed as dist

    joined = _current[1] if _current is not None else \
        _joined_world() if dist.is_available() and dist.is_initialized() else None
    if joined is None:
        if settings.single:
            return World()
        fabric = _fabric(settings)
        if fabric.world_size == 1:  # e.g. strategy=ddp devices=1: nothing to launch
            return World()
        fabric.launch()
        world = World(fabric.global_rank, fabric.world_size, fabric.local_rank, fabric.device)
    else:  # launched earlier in this command (another section's settings, or a Trainer's own launch): join it
        world = joined
        if not settings.single and _fabric(settings).world_size != world.size:
            raise ConfigError(f"{_describe(settings)} asks for {_fabric(settings).world_size} processes, but this "
                              f"run already runs as {world.size}: use the same devices/strategy/num_nodes in every "
                              f"section (or leave {settings.where}devices/strategy/num_nodes at their defaults)")
    _current = (settings, world)
    return world


def _joined_world() -> World:
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
    return World(dist.get_rank(), dist.get_world_size(), local_rank, device)


def _fabric(settings: WorldSettings):
    from lightning.fabric import Fabric
    from lightning.fabric.strategies import DDPStrategy
    from lightning.fabric.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    w = settings.where
    if settings.strategy not in SCRIPT_STRATEGIES:
        raise ConfigError(f"{w}strategy={settings.strategy!r} cannot run this pipeline: use one of "
                          f"{', '.join(SCRIPT_STRATEGIES)} (Lightning re-runs the command once per device)")
    try:
        fabric = Fabric(accelerator=settings.accelerator, devices=settings.devices, strategy=settings.strategy,
                        num_nodes=settings.num_nodes)
        if isinstance(fabric.strategy, DDPStrategy):  # again, with a timeout that outlasts a slow rank's job
            fabric = Fabric(accelerator=settings.accelerator, devices=settings.devices,
                            strategy=DDPStrategy(timeout=COLLECTIVE_TIMEOUT), num_nodes=settings.num_nodes)
    except (ValueError, TypeError, RuntimeError) as exc:  # Lightning's MisconfigurationException is a ValueError
        raise ConfigError(f"{w}accelerator={settings.accelerator!r} {w}devices={settings.devices!r} "
                          f"{w}strategy={settings.strategy!r} {w}num_nodes={settings.num_nodes!r}: "
                          f"{_first_line(exc)}") from None
    launcher = fabric.strategy.launcher
    if launcher is not None and not isinstance(launcher, _SubprocessScriptLauncher):
        raise ConfigError(f"{w}strategy={settings.strategy!r} starts its processes with "
                          f"{type(launcher).__name__}: use strategy=ddp")
    return fabric


def _describe(settings: WorldSettings) -> str:
    return (f"accelerator={settings.accelerator} devices={settings.devices} strategy={settings.strategy} "
            f"num_nodes={settings.num_nodes}")


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def launched_as_zero() -> bool:
    """Whether this process is global rank 0 as its launcher set the environment (True before any launch): what a
    step that runs before `launch_world` (checking the output folder) needs to leave writing to rank 0."""
    for name in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if name in os.environ:
            return int(os.environ[name]) == 0
    # Lightning's launcher sets LOCAL_RANK and NODE_RANK in the processes it starts (GLOBAL_RANK only later).
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


__all__ = ["COLLECTIVE_TIMEOUT", "World", "WorldSettings", "current_world", "launch_world", "launched_as_zero"]
