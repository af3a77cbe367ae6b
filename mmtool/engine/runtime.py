"""Where and how numbers are computed: device, precision, memory format, loader workers, ranks.

Every command builds one :class:`Runtime` from the recipe's ``train:`` section (in :mod:`mmtool.commands`,
before it creates its run directory) and passes it down to the stage, the loop, the inference pass, probes and
analyses; nothing else builds a device, a precision or a runtime. An impossible request
(``train.device=cuda`` on a machine without CUDA, ``fp16`` on a CPU) is a one-line error that leaves
nothing behind. The training loop, the inference pass and the loaders
take their device, autocast, gradient scaler, pinning and sharding from it; nothing else in mmtool
asks which hardware it runs on.

``precision: auto`` picks bf16 only where the hardware runs it fast: a CUDA device that supports bf16, or
a CPU with AMX tiles (Sapphire Rapids and later). On CPUs without AMX, bf16 is emulated and several times
*slower* than fp32, so auto picks fp32 there. The choice is by capability, read at run time, never by a
CPU model name. ``fp16`` exists for CUDA only (with dynamic gradient scaling).

Distributed data parallel: launched by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``), :meth:`Runtime.from_config` joins the process group (NCCL on CUDA, gloo on CPU), puts
each rank on its own GPU (``cuda:LOCAL_RANK``), and declares rank 0 the only process that writes run
files (:func:`mmtool.files.set_writer`). A recipe runs unchanged: ``train.batch_size`` is the global batch,
split evenly over the ranks, so every optimizer step sees the same samples as in one process. Control
decisions that must be the same on every rank (stop on a signal, checkpoint now) travel over a small gloo
group, so agreeing on them never waits for the GPU.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import nn

from mmtool.data.source import Batch, Shard
from mmtool.errors import UserError

Precision = Literal["fp32", "bf16", "fp16"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: Precision = "fp32"
    channels_last: bool = False
    workers: int = 0
    eval_batch_size: int = 0  # 0: each source's own default
    log_every: int = 50
    rank: int = 0
    world_size: int = 1
    sync_batchnorm: bool = False

    @classmethod
    def from_config(cls, train: Any) -> Runtime:
        """The runtime a recipe's ``train:`` section asks for; a user error when this machine can't. Under
        ``torchrun`` this joins the process group (once per process)."""
        rank, world_size, local_rank = launch_env()
        device = resolve_device(train.device, local_rank if world_size > 1 else None)
        precision = resolve_precision(train.precision, device)
        if train.workers < 0:
            raise UserError(f"train.workers must be >= 0, got {train.workers}")
        if train.sync_batchnorm and world_size > 1 and device.type != "cuda":
            raise UserError(
                "train.sync_batchnorm needs CUDA devices (torch's SyncBatchNorm runs on GPUs only); on the CPU "
                "each rank normalises with its own batch statistics: drop the setting"
            )
        if world_size > 1:
            init_distributed(device)
        runtime = cls(device, precision, bool(train.channels_last), int(train.workers), int(train.eval_batch_size),
                      max(1, int(train.log_every)), rank, world_size, bool(train.sync_batchnorm))  # fmt: skip
        runtime.apply_backend_flags()
        return runtime

    @classmethod
    def cpu(cls, train: Any = None) -> Runtime:
        """fp32 on the CPU in one process, with the other settings of a ``train:`` section when one is given
        (benchmarks and tests that ask for exactly this; a command's runtime is :meth:`from_config`'s)."""
        if train is None:
            return cls(torch.device("cpu"))
        return cls(torch.device("cpu"), "fp32", bool(train.channels_last), int(train.workers),
                   int(train.eval_batch_size), max(1, int(train.log_every)))  # fmt: skip

    def on_this_process(self) -> Runtime:
        """This runtime's device in fp32, in one process, with each source's own batches and no workers:
        what a small model on in-memory features (a linear probe) trains with, every rank alike."""
        return replace(self, precision="fp32", channels_last=False, workers=0, eval_batch_size=0, rank=0,
                       world_size=1, sync_batchnorm=False)  # fmt: skip

    # ------------------------------------------------------------------------------------------ compute
    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one rank, with the process group up (collectives would otherwise be identities)."""
        return self.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.world_size)

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        """Mixed-precision context of the forward pass (a no-op for fp32)."""
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.precision])

    def all_reduce(self, tensor: torch.Tensor, op: Literal["sum", "max", "min"] = "sum") -> torch.Tensor:
        """``tensor`` reduced over every rank, in place, and returned: how methods combine the statistics
        of their batches. The tensor itself, untouched, in one process (``world_size == 1``) or when no
        process group is initialised."""
        if not self.distributed:
            return tensor
        ops = {"sum": torch.distributed.ReduceOp.SUM, "max": torch.distributed.ReduceOp.MAX,
               "min": torch.distributed.ReduceOp.MIN}  # fmt: skip
        if op not in ops:
            raise ValueError(f"all_reduce: op must be one of {', '.join(ops)}, got {op!r}")
        torch.distributed.all_reduce(tensor, op=ops[op])
        return tensor

    def local_batch_size(self, batch_size: int, key: str = "train.batch_size") -> int:
        """This rank's share of a global batch size (0, the whole split, stays 0: each rank takes its shard)."""
        if batch_size <= 0 or self.world_size == 1:
            return batch_size
        if batch_size % self.world_size:
            raise UserError(
                f"{key}={batch_size} is the global batch and must divide evenly over {self.world_size} processes"
            )
        return batch_size // self.world_size

    def wrap(self, model: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
        """The module the training step calls: ``model`` itself in one process, else
        ``DistributedDataParallel(model)`` (gradients averaged over the ranks during backward; rank 0's
        weights and buffers broadcast at construction). ``find_unused_parameters`` for methods whose step
        leaves part of the model out (one modality per step)."""
        if not self.distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return _Replica(model, device_ids=ids, find_unused_parameters=find_unused_parameters)

    def convert_sync_batchnorm(self, model: nn.Module) -> nn.Module:
        """With ``train.sync_batchnorm`` under several ranks, batch norms normalise with statistics of the
        global batch (``nn.SyncBatchNorm``); otherwise each rank uses its own, as in one process."""
        if self.sync_batchnorm and self.distributed:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    # -------------------------------------------------------------------------------------- agreement
    def barrier(self) -> None:
        if self.distributed:
            torch.distributed.barrier(group=_control_group())

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (e.g. the run directory it created)."""
        if not self.distributed:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0, group=_control_group())
        return box[0]

    def gather_objects(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj, group=_control_group())
        return out

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any: how ranks agree to stop or save at the same
        step. A one-element sum on the CPU control group; never a device synchronisation."""
        if not self.distributed:
            return flag
        value = torch.tensor([1 if flag else 0], dtype=torch.int32)
        torch.distributed.all_reduce(value, group=_control_group())
        return bool(value.item())

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A dynamic loss scaler for fp16 (bf16 and fp32 need none)."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device; with ``channels_last`` convert its 4-D weights to channels_last and
        its 5-D (video) weights to channels_last_3d (``Module.to(memory_format=channels_last)`` refuses
        5-D tensors)."""
        model.to(self.device)
        if self.channels_last:
            with torch.no_grad():
                for p in [*model.parameters(), *model.buffers()]:
                    if p.dim() == 4:
                        p.data = p.data.contiguous(memory_format=torch.channels_last)
                    elif p.dim() == 5:
                        p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
        return model

    def to_device(self, batch: Batch) -> Batch:
        """The batch on the device, in the model's memory format, copied asynchronously from pinned memory."""
        if self.device.type == "cpu" and not self.channels_last:
            return batch  # already where it is needed, in the layout it is needed
        return batch.to(self.device, non_blocking=self.pin_memory, channels_last=self.channels_last)

    def apply_backend_flags(self) -> None:
        """TF32 matmuls/convolutions and cuDNN autotuning on CUDA (fixed input shapes make autotuning pay)."""
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True

    def describe(self) -> dict[str, Any]:
        """What env.json records."""
        return {
            "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else cpu_name(),
            "precision": self.precision,
            "channels_last": self.channels_last,
            "cpu_amx": cpu_has_amx(),
            "threads": torch.get_num_threads(),
            "workers": self.workers,
            "world_size": self.world_size,
            "backend": torch.distributed.get_backend() if self.distributed else None,
            "sync_batchnorm": self.sync_batchnorm,
        }


class _Replica(nn.parallel.DistributedDataParallel):
    """DDP as a method sees it: calling it runs the synchronised forward; any other attribute is the
    wrapped model's (``model.head.bias``, ``model.modalities``), read-only use in a training step."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def launch_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) as ``torchrun`` sets them; (0, 1, 0) in a plain process."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise UserError(f"RANK={rank} is not a rank of WORLD_SIZE={world_size}")
    return rank, world_size, local_rank


_CONTROL: dict[str, Any] = {}


def init_distributed(device: torch.device) -> None:
    """Join torchrun's process group (NCCL for CUDA devices, gloo for the CPU), once per process, and
    make rank 0 the only writer of run files. The group is torn down when the process exits."""
    import atexit

    from mmtool.files import set_writer

    dist = torch.distributed
    if not dist.is_available():
        raise UserError("this torch build has no torch.distributed; run without torchrun")
    if dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    _CONTROL["group"] = dist.new_group(backend="gloo") if device.type == "cuda" else dist.group.WORLD
    set_writer(dist.get_rank() == 0)
    atexit.register(_shutdown)


def _control_group() -> Any:
    return _CONTROL.get("group")


def barrier_all() -> None:
    """Every rank of the process group (if one is up) reaches this point before any goes on."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier(group=_control_group())


def _shutdown() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def resolve_device(name: str, local_rank: int | None = None) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a device this machine has, or a user error. Under
    torchrun (``local_rank`` given) ``auto`` and ``cuda`` mean this rank's GPU, ``cuda:LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and local_rank is not None:
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"train.device: {name!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(
                f"train.device={name}: CUDA is not available here (torch {torch.__version__}); "
                "use train.device=cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"train.device={name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise UserError(f"train.device: {name!r} is not supported (use auto, cpu, cuda or cuda:N)")
    return device


def resolve_precision(precision: str, device: torch.device) -> Precision:
    if precision == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise UserError(
            f"train.precision=fp16 needs a CUDA device (it trains with gradient scaling); on {device.type} "
            "use bf16 or fp32"
        )
    if precision not in ("fp32", "bf16", "fp16"):
        raise UserError(f"train.precision must be one of auto, fp32, bf16, fp16, got {precision!r}")
    return precision  # type: ignore[return-value]


def bf16_is_fast(device: torch.device) -> bool:
    """bf16 runs natively: a CUDA device with bf16 support, or a CPU with AMX tiles."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_amx()


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX bf16 tiles (``MMTOOL_CPU_AMX=0/1`` overrides, for tests)."""
    forced = os.environ.get("MMTOOL_CPU_AMX")
    if forced in ("0", "1"):
        return forced == "1"
    probe = getattr(torch._C._cpu, "_is_amx_tile_supported", None)
    if probe is not None:
        try:
            return bool(probe())
        except RuntimeError:
            pass
    return "amx_bf16" in _cpu_flags()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "cpu"
