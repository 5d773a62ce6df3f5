"""torch.distributed under torchrun: rank and world size from the environment, sum-reductions, sharding.

A single process (no ``WORLD_SIZE`` > 1 in the environment) gets a ``Dist`` that does nothing, so
the same code runs with and without torchrun. Backend: nccl on CUDA, gloo on CPU. No messaging of
our own: every exchange is a torch.distributed collective.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch

from embedlab.errors import InputError, UserError


class DistributedMismatch(InputError):
    """The ranks of one job disagree (different data or settings)."""


class PeerFailed(UserError, RuntimeError):
    """Another rank of the job stopped with an error (it printed the message); this rank stops too."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; ``world == 1`` is the plain single-process case."""

    rank: int = 0
    world: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of ``t`` over the ranks (in place on a contiguous copy; identical on every rank)."""
        if not self.active:
            return t
        import torch.distributed as tdist

        t = t.contiguous()
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t

    def check_same(self, what: str, data: bytes) -> None:
        """Raise DistributedMismatch on every rank unless ``data`` is byte-identical on all ranks."""
        if not self.active:
            return
        digest = int.from_bytes(hashlib.sha256(data).digest()[:7], "big")
        lo = torch.tensor([digest], dtype=torch.int64)
        hi = lo.clone()
        import torch.distributed as tdist

        tdist.all_reduce(lo, op=tdist.ReduceOp.MIN)
        tdist.all_reduce(hi, op=tdist.ReduceOp.MAX)
        if int(lo) != int(hi):
            raise DistributedMismatch(
                f"the {self.world} ranks loaded different {what}; give every rank the same --data-dir, dataset and"
                " settings"
            )

    def agree(self, ok: bool) -> bool:
        """True on every rank only if ``ok`` is true on every rank (so all ranks stop together)."""
        if not self.active:
            return ok
        import torch.distributed as tdist

        t = torch.tensor([1 if ok else 0], dtype=torch.int64)
        tdist.all_reduce(t, op=tdist.ReduceOp.MIN)
        return bool(int(t))

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as tdist

            tdist.barrier()

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank (a run folder's path, chosen once)."""
        if not self.active:
            return obj
        import torch.distributed as tdist

        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def shard(self, n: int) -> slice:
        """This rank's contiguous block of ``n`` rows, ceil(n / world) per rank (the last may be shorter or empty)."""
        per = -(-n // self.world)
        return slice(min(n, self.rank * per), min(n, (self.rank + 1) * per))

    def gather_rows(self, part: torch.Tensor, n: int) -> torch.Tensor:
        """The ``n`` rows that the ranks' ``shard(n)`` blocks hold, in order, on every rank (all_gather, padded to equal
        size)."""
        if not self.active:
            return part
        import torch.distributed as tdist

        per = -(-n // self.world)
        padded = torch.zeros((per, *part.shape[1:]), dtype=part.dtype, device=part.device)
        padded[: len(part)] = part
        blocks = [torch.empty_like(padded) for _ in range(self.world)]
        tdist.all_gather(blocks, padded)
        return torch.cat(blocks)[:n]


def balanced_rows(row_weights: np.ndarray, world: int, rank: int) -> slice:
    """The contiguous block of rows of rank ``rank`` when ``world`` ranks split the total weight evenly."""
    cum = np.concatenate([[0], np.cumsum(np.asarray(row_weights, dtype=np.float64))])
    targets = cum[-1] * np.arange(world + 1) / world
    edges = np.searchsorted(cum, targets, side="left")
    edges[0], edges[-1] = 0, len(row_weights)
    edges = np.maximum.accumulate(edges)
    return slice(int(edges[rank]), int(edges[rank + 1]))


#: How long a rank waits in a collective for the others. Rank 0 alone runs some steps (the linear probe,
#: writing reports) while the others wait, so this is long; a rank that dies is caught sooner by torchrun,
#: which stops the whole job.
COLLECTIVE_TIMEOUT = timedelta(hours=2)


_JOB = Dist()


def current() -> Dist:
    """This process's place in the job: the one place the rank and world size live (set by ``init_from_env``)."""
    return _JOB


def init_from_env(device: str = "cpu") -> Dist:
    """Join the torchrun job described by the environment (RANK, WORLD_SIZE, MASTER_ADDR, ...), if any; it becomes
    ``current()``."""
    global _JOB
    _JOB = _join(device)
    return _JOB


def _join(device: str) -> Dist:
    env = {k: os.environ.get(k, "") for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    if not (env["WORLD_SIZE"] or "1").isdigit():
        raise InputError(
            f"WORLD_SIZE={env['WORLD_SIZE']!r} is not a number of processes; unset it, or launch with torchrun"
        )
    world = int(env["WORLD_SIZE"] or "1")
    if world <= 1:
        return Dist()
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not env[k]]
    if missing or not env["RANK"].isdigit() or not (env["LOCAL_RANK"] or "0").isdigit():
        what = (
            f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set"
            if missing
            else "RANK or LOCAL_RANK is not a number"
        )
        raise InputError(
            f"WORLD_SIZE={world} is set but {what} as torchrun sets them; launch with torchrun "
            "(torchrun --standalone --nproc-per-node N -m embedlab ...) or unset WORLD_SIZE"
        )
    import torch.distributed as tdist

    backend = "nccl" if device == "cuda" and torch.cuda.is_available() else "gloo"
    if not tdist.is_initialized():
        if backend == "nccl":
            torch.cuda.set_device(int(env["LOCAL_RANK"] or "0"))
        try:
            tdist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
        # the rendezvous itself failed: an unreachable or wrong MASTER_ADDR/PORT
        except (RuntimeError, ValueError) as exc:
            raise InputError(
                f"could not join the torch.distributed job at {env['MASTER_ADDR']}:{env['MASTER_PORT']} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); launch every rank with torchrun"
            ) from None
    return Dist(rank=tdist.get_rank(), world=tdist.get_world_size(), backend=backend)


def shutdown(dist: Dist) -> None:
    global _JOB
    _JOB = Dist()
    if dist.active:
        import torch.distributed as tdist

        if tdist.is_initialized():
            tdist.destroy_process_group()
