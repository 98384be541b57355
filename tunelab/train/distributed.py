"""Data-parallel training with PyTorch's own engine: torchrun (or `accelerate launch`) starts N processes,
each runs the same recipe, and `torch.nn.parallel.DistributedDataParallel` averages gradients.

What a recipe means does not change with N. An optimizer step is still the `train.grad_accum`
micro-batches of `train.batch_size` that one process would take; the ranks split them:

- when the step's micro-batch count is a multiple of N, rank r takes micro-batches r, r+N, ... whole
  (the same batches one process would see, so the same padding and BatchNorm statistics);
- otherwise every micro-batch is split into N row shards and rank r takes shard r;
- a rank left with nothing (a last micro-batch smaller than N) runs one row with weight 0, so every
  rank joins the gradient all-reduce.

The step's loss stays the exact mean over all its items (tunelab.train.loop): with w_j the items of
micro-batch j over every rank, rank r back-propagates  N · Σ_{j on r} w_j · loss_j / Σ_j w_j,  and
DDP's mean over the N ranks gives  Σ_j w_j · loss_j / Σ_j w_j.  Σ_j w_j is one all-reduce per step.

Only rank 0 writes files (run folder, checkpoints, artifact, report); the other ranks wait for its
decision (best step, early stop) and take it. Under DDP rank 0 alone evaluates its full replica; under
FSDP every rank runs each periodic evaluation (its layers' weights are gathered as they run) and rank 0
records it. Every rank reads a checkpoint on --resume.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from tunelab.errors import TunelabError

#: rank r > 0 seeds torch with seed + r * stride (distinct streams for any seed below the stride)
RANK_SEED_STRIDE = 1_000_003
#: ranks wait this long for rank 0's evaluation before giving up (a long final eval must fit)
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class Ranks:
    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """This rank's device: its own GPU (LOCAL_RANK) when CUDA is there, else the CPU."""
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def launched_world() -> int:
    """Process count set by torchrun / accelerate launch (1 when started plainly)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise TunelabError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a process count") from None


def ranks() -> Ranks | None:
    """This process's place in the group, joining the group on first call; None in a single process."""
    if launched_world() <= 1:
        return None
    if not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
        quiet_followers(dist.get_rank())
    return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def is_main() -> bool:
    """True in a single process and on rank 0: the one process that prints and writes files."""
    group = ranks()
    return group is None or group.main


def quiet_followers(rank: int) -> None:
    """Ranks other than 0 print nothing (rank 0 speaks for the group) and show no progress bars."""
    if rank != 0:
        from tunelab.progress import console

        console.quiet = True
        os.environ["TUNELAB_QUIET"] = "1"


def share(value: Any) -> Any:
    """Rank 0's `value` on every rank (any picklable object); the value itself in one process."""
    if ranks() is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def leave() -> None:
    """Leave the process group at the end of a run (a no-op in one process)."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def own_streams(task: Any, group: Ranks, seed: int) -> None:
    """Rank r > 0 gets its own dropout masks and augmentation draws; rank 0 keeps one process's streams."""
    if group.rank > 0:
        torch.manual_seed(seed + RANK_SEED_STRIDE * group.rank)
        for i, name in enumerate(sorted(task.generators)):
            task.generators[name] = np.random.default_rng([seed, group.rank, i])


def data_parallel(model: nn.Module, task: Any, group: Ranks, seed: int, sharded: bool) -> DataParallel:
    """DDP, or FSDP when train.fsdp; built before the optimizer (FSDP replaces the parameters)."""
    return (ShardedParallel if sharded else DataParallel)(model, task, group, seed)


class LossModule(nn.Module):
    """The task's loss as a module, so DDP and FSDP wrap exactly the forward that produces the loss,
    whatever the task calls inside it (model(...), the decoder's hidden states, its output embeddings).
    `run(model)` instead of a batch runs other model work the same way (FSDP: the reference log-probs
    and rollouts a batch is built from, with the root's weights gathered)."""

    def __init__(self, model: nn.Module, task: Any):
        super().__init__()
        self.model = model
        self.task = task  # a plain attribute: not a module

    def forward(self, batch: dict[str, torch.Tensor] | None, run: Callable[[nn.Module], Any] | None = None) -> Any:
        if run is not None:
            return run(self.model)
        return self.task.loss_fn(self.model, batch)


@dataclass
class Snapshot:
    """What a data-parallel checkpoint adds to rank 0's own state: every rank's RNG states, and under FSDP
    the trainable weights and optimizer state gathered whole (None under DDP: rank 0 holds them whole),
    so the files on disk are those of a one-process checkpoint."""

    rank_states: list[dict[str, Any]]
    tensors: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None


class DataParallel:
    """One rank's view of data-parallel training: which micro-batches it takes, its DDP-wrapped loss,
    and the sums over ranks the loop needs."""

    every_rank_evaluates = False  # DDP: rank 0 evaluates its full replica alone

    def __init__(self, model: nn.Module, task: Any, group: Ranks, seed: int):
        self.group = group
        device_ids = [group.local_rank] if torch.cuda.is_available() else None
        # broadcast_buffers off: train-mode forwards never read buffers that change (BatchNorm normalises by the
        # batch), and rank 0, whose running statistics are the ones evaluated and saved, keeps its own anyway
        self.ddp = nn.parallel.DistributedDataParallel(LossModule(model, task), device_ids=device_ids,
                                                       broadcast_buffers=False)
        own_streams(task, group, seed)

    def snapshot(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 generators: dict[str, np.random.Generator]) -> Snapshot:
        """Every rank's torch, Python, numpy and task-generator states, gathered for rank 0's checkpoint
        (a collective: every rank calls it at each checkpoint), so --resume restores each rank's own."""
        from tunelab.train.checkpoint import numpy_state

        mine = {"torch": torch.get_rng_state().tolist(), **numpy_state(generators)}
        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, mine)
        return Snapshot(states)

    def place(self, value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A saved whole tensor laid out like this rank's `like` (a replica holds it whole)."""
        return value

    def full_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The trainable weights and buffers as one process holds them (a collective under FSDP)."""
        from tunelab.train.checkpoint import model_state

        return model_state(model)

    def evaluate(self, run: Callable[[nn.Module], Any]) -> Any:
        """`run(model)` for a periodic evaluation on rank 0's full replica."""
        return run(self.ddp.module.model)

    def restore_rank_state(self, states: list[dict[str, Any]] | None,
                           generators: dict[str, np.random.Generator]) -> None:
        """After loading a checkpoint (rank 0's states), take this rank's own from `ranks.json`; a run resumed
        with another process count keeps the fresh streams of ranks rank 0 never saved."""
        from tunelab.train.checkpoint import restore_numpy_state

        if self.group.rank == 0 or states is None or len(states) != self.world:
            return
        state = states[self.group.rank]
        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
        restore_numpy_state(state, generators)

    @property
    def world(self) -> int:
        return self.group.world

    def shard(self, micro_batches: list[np.ndarray]) -> list[tuple[np.ndarray, float]]:
        """This rank's (index, keep) pairs for one optimizer step (see the module docstring); keep is 0
        for the one-row stand-in of a rank that got no rows."""
        n, r = self.world, self.group.rank
        if len(micro_batches) % n == 0:
            mine = micro_batches[r::n]
        else:
            mine = [part for index in micro_batches if len(part := np.array_split(index, n)[r])]
        if mine:
            return [(index, 1.0) for index in mine]
        return [(micro_batches[0][:1], 0.0)]

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64, one all-reduce)."""
        tensor = torch.tensor(values, dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.to(self.group.device)
        dist.all_reduce(tensor)
        return tensor.cpu().tolist()

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.ddp(batch)

    def outside_loss(self, run: Callable[[nn.Module], Any]) -> Any:
        """`run(model)` for work that is not the loss (batches built from the model): every replica holds
        the full weights, so it runs directly (not through DDP, whose forward expects a backward)."""
        return run(self.ddp.module.model)

    @contextlib.contextmanager
    def sync(self, last: bool) -> Iterator[None]:
        """Gradients are all-reduced once per step, in the backward of the rank's last micro-batch."""
        with contextlib.nullcontext() if last else self.ddp.no_sync():
            yield

    def final_model(self, model: nn.Module, rebuild) -> nn.Module | None:
        """The model to evaluate and save at the end: every replica holds the full weights already."""
        return model


class FollowerRunDir:
    """The run folder as a rank other than 0 sees it: it reads (checkpoints on --resume) and never
    writes, so N processes leave exactly the files one process would."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def write_config(self, config: dict[str, Any], seed: int | None = None) -> None:
        """Rank 0 writes it."""

    def log(self, record: dict[str, Any]) -> None:
        """Rank 0 logs the step (its loss is already the mean over every rank)."""

    def truncate_metrics(self, step: int) -> None:
        """Rank 0 truncates."""

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Rank 0 writes it."""

    def metrics(self) -> list[dict[str, Any]]:
        return []


def whole(tensor: Any) -> Any:
    """A sharded tensor gathered whole on the CPU (a collective); anything else as it is."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor().cpu() if isinstance(tensor, DTensor) else tensor


def blocks_of(model: nn.Module) -> list[nn.Module]:
    """The repeated blocks FSDP shards one by one (transformer layers, GPT blocks, CNN stages): the
    elements of every ModuleList / Sequential that hold parameters, outermost first."""
    blocks: list[nn.Module] = []
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.ModuleList | nn.Sequential) and id(module) not in seen:
            for child in module:
                if any(True for _ in child.parameters()) and not any(id(m) in seen for m in child.modules()):
                    blocks.append(child)
                    seen.update(id(m) for m in child.modules())
            seen.add(id(module))
    return blocks


class ShardedParallel(DataParallel):
    """FSDP (torch.distributed.fsdp.fully_shard): each block's weights, gradients and optimizer state live
    in N shards, gathered for its forward and backward; the global batch is split as in DDP and the
    gradients are averaged over the ranks the same way (reduce-scatter), so the step is the same.
    The full weights are gathered once, at the end, into a plain model on rank 0 (`final_model`).

    The root of the sharding is the task's loss as a module (`LossModule`), not the model: what no block
    owns (embeddings, final norm, the output head, tied or not) is gathered for the whole loss forward, so
    tasks that project hidden states through the output embedding themselves (SFT, DPO, GRPO's chunked
    loss) are covered, and so is model work outside the loss (`outside_loss`)."""

    every_rank_evaluates = True  # each forward gathers weights from every rank

    def __init__(self, model: nn.Module, task: Any, group: Ranks, seed: int):
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        self.group = group
        mesh = init_device_mesh(group.device.type, (group.world,))
        for block in blocks_of(model):
            fully_shard(block, mesh=mesh)
        self.root = fully_shard(LossModule(model, task), mesh=mesh)
        own_streams(task, group, seed)

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.root(batch)

    def outside_loss(self, run: Callable[[nn.Module], Any]) -> Any:
        """`run(model)` through the root's forward: the weights no block owns are gathered around it."""
        return self.root(None, run=run)

    @contextlib.contextmanager
    def sync(self, last: bool) -> Iterator[None]:
        """Gradients are reduce-scattered once per step, in the backward of the rank's last micro-batch."""
        self.root.set_requires_gradient_sync(last)
        yield

    def evaluate(self, run: Callable[[nn.Module], Any]) -> Any:
        """`run(model)` on every rank through the root. The other ranks sample from rank 0's random stream
        for it (then get their own back), so a sampled generation takes the same number of forwards, and
        so the same gathers, on every rank; rank 0's stream advances as in one process."""
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        states = share([torch.get_rng_state()] + [torch.cuda.get_rng_state(d) for d in devices])
        with contextlib.nullcontext() if self.group.main else torch.random.fork_rng(devices=devices):
            if not self.group.main:
                torch.set_rng_state(states[0])
                for device, state in zip(devices, states[1:], strict=True):
                    torch.cuda.set_rng_state(state, device)
            return self.root(None, run=run)

    def full_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The trainable weights and buffers gathered whole (a collective: every rank calls it)."""
        from tunelab.train.checkpoint import model_state

        return {name: whole(tensor) for name, tensor in model_state(model).items()}

    def snapshot(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 generators: dict[str, np.random.Generator]) -> Snapshot:
        """The RNG states plus the weights and optimizer state gathered whole, so the checkpoint is a
        one-process checkpoint (a resume may use another process count, or none)."""
        state = optimizer.state_dict()
        gathered = {"state": {index: {key: whole(value) for key, value in entry.items()}
                              for index, entry in state["state"].items()},
                    "param_groups": state["param_groups"]}
        return Snapshot(super().snapshot(model, optimizer, generators).rank_states, self.full_state(model),
                        gathered)

    def place(self, value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """This rank's shard of a saved whole tensor, laid out like `like` (cut locally: every rank read it)."""
        from torch.distributed.tensor import DTensor, distribute_tensor

        if not isinstance(like, DTensor):
            return value
        return distribute_tensor(value.to(like.dtype), like.device_mesh, like.placements, src_data_rank=None)

    def final_model(self, model: nn.Module, rebuild) -> nn.Module | None:
        """The trained weights gathered (a collective) into `rebuild()`, a plain copy of the model, on rank 0;
        None on the other ranks."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        full = get_model_state_dict(self.root, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.group.main:
            return None
        plain = rebuild()
        missing, unexpected = plain.load_state_dict({k.removeprefix("model."): v for k, v in full.items()},
                                                    strict=False)
        if unexpected:
            raise TunelabError(f"train.fsdp: the gathered weights do not fit the model ({unexpected[0]})")
        return plain
