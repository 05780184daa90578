"""torch.distributed for every layer: one process group, set up from ``torchrun``'s environment.

Training and embedding run unchanged under ``torchrun --nproc_per_node=N [--nnodes ...] -m
mrl_analysis.cli ...``: torchrun starts one process per device and tells each its place in
the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ...).
:func:`init` joins the process group those variables describe; in a plain process (no
torchrun) it does nothing and every helper here answers for a world of one, so library code
calls them unconditionally::

    from mrl_analysis.core import dist

    dist.init()                       # no-op outside torchrun
    device = dist.local_device("auto")  # cuda:LOCAL_RANK, or cpu
    mine = items[dist.rank() :: dist.world_size()]
    ...
    dist.barrier()
    if dist.is_main():
        write_results()

The backend is gloo on CPU-only machines and ``"cpu:gloo,cuda:nccl"`` where CUDA is
available: nccl carries CUDA tensors, gloo the CPU tensors and the small Python objects
(plans, error messages) that :func:`broadcast_object` and :func:`all_gather_objects` send.
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as torch_dist

#: Environment variables torchrun sets for each process it starts.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """Whether this process was started by torchrun (or a launcher setting the same variables)
    as one of several processes."""
    return all(v in os.environ for v in TORCHRUN_ENV) and int(os.environ["WORLD_SIZE"]) > 1


def init(timeout: timedelta | None = None) -> bool:
    """Join the process group torchrun describes, once; returns :func:`is_distributed`.

    Outside torchrun, or when the group already exists (a script that set it up itself),
    nothing is done. ``timeout`` bounds every collective (torch's default: 30 minutes); a
    rank that dies is noticed by torchrun, which stops the others, so long waits (rank 0
    assembling a large cache while the others wait) are safe to allow.
    """
    if not launched() or not torch_dist.is_available() or torch_dist.is_initialized():
        return is_distributed()
    cuda = torch.cuda.is_available()
    if cuda:
        # nccl binds each rank to its device; without this every rank would share GPU 0.
        torch.cuda.set_device(local_rank())
    torch_dist.init_process_group(backend="cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=timeout)
    # Leave the group before the interpreter tears down: gloo's threads still running at
    # exit abort the process ("terminate called without an active exception").
    atexit.register(destroy)
    return is_distributed()


def is_distributed() -> bool:
    """Whether a process group with more than one process is set up."""
    return (
        torch_dist.is_available()
        and torch_dist.is_initialized()
        and torch_dist.get_world_size() > 1
    )


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return torch_dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 outside a process group)."""
    return torch_dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``; 0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Whether this is rank 0, the process that writes shared results."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in a single process)."""
    if is_distributed():
        torch_dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as process ``src`` holds it, on every process (picklable, small)."""
    if not is_distributed():
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=src, device=torch.device("cpu"))
    return box[0]


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Give every process ``src``'s buffers of ``module`` (e.g. BatchNorm's running statistics),
    in place.

    DistributedDataParallel keeps parameters equal but lets each rank update its buffers from
    its own batches between the broadcasts it does at each forward; evaluating (or caching)
    on several ranks after training needs them equal, or each rank scores a slightly
    different model.
    """
    if not is_distributed():
        return
    for buffer in module.buffers():
        torch_dist.broadcast(buffer.data, src=src)


def all_gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj``, in rank order (picklable, small)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    torch_dist.all_gather_object(out, obj)
    return out


def local_device(requested: str | torch.device | None = "auto") -> torch.device:
    """The device this process should compute on.

    ``"auto"`` (or None): this process's GPU (``cuda:LOCAL_RANK``) when CUDA is available,
    else the CPU. ``"cuda"`` without an index also means this process's GPU, so that one
    command line serves every rank; anything else (``"cpu"``, ``"cuda:1"``) is taken as is.
    """
    name = "auto" if requested is None else str(requested)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                "device 'cuda' was asked for but torch sees no CUDA GPU here: use --device cpu "
                "(or auto), or install a CUDA build of torch"
            )
        return torch.device("cuda", local_rank() % torch.cuda.device_count())
    return torch.device(name)


def destroy() -> None:
    """Leave the process group (at the end of a torchrun job), if one was joined."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
