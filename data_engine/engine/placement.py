"""GPU memory-aware placement: which GPU of which node each GPU actor lands on, so that no GPU is given more model
memory than it has.

Each stage declares the GPU memory one of its actors needs (`Stage.gpu_memory_gib`: its models' real sizes and its
working set for its options). Each GPU node declares the memory of its GPUs as the Ray custom resource
`gpu_memory_gib` (all its GPUs together): per node type in infra/ray/cluster.yaml, from the device for a local run.
An actor then asks Ray for
- `num_gpus`: its memory over the smallest GPU's (never less than the stage's own `num_gpus`). Ray never puts
  fractions adding up to more than one GPU on a GPU, so no GPU holds more than its memory;
- `gpu_memory_gib`: its memory, so a GPU node that does not declare its memory gets none of these actors.
The plan packs the actors (largest first, first GPU with room, its node's CPUs included) to prove they fit before
anything starts, and says which stage does not, with the numbers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

GPU_MEMORY = "gpu_memory_gib"  # the Ray custom resource: GiB of GPU memory on the node
RAY_PRECISION = 1e-4  # Ray accounts resources in 1/10000ths


@dataclass(frozen=True)
class GpuNode:
    """One GPU node: its type, GPUs, the memory of each, and its CPUs (its GPU actors need them too)."""

    node_type: str
    gpus: int
    gib_per_gpu: float
    cpus: float


@dataclass(frozen=True)
class GpuActor:
    stage: str
    gib: float  # declared GPU memory
    fraction: float  # of one GPU, as Ray is asked for it
    cpus: float


@dataclass
class GpuSlot:
    """One GPU of one node, and the actors packed onto it."""

    node_type: str
    node: int  # which node of its type
    gpu: int
    gib: float
    actors: list[GpuActor] = field(default_factory=list)

    @property
    def used(self) -> float:
        return sum(a.fraction for a in self.actors)

    @property
    def used_gib(self) -> float:
        return sum(a.gib for a in self.actors)


def round_up(value: float) -> float:
    """`value` rounded up to Ray's precision (rounding down would ask for less than the stage needs)."""
    return round(math.ceil(value / RAY_PRECISION - 1e-6) * RAY_PRECISION, 4)


def gpu_fraction(gib: float, share: float, nodes: tuple[GpuNode, ...]) -> float:
    """What an actor asks Ray for: its memory's share of the smallest GPU, at least the stage's `num_gpus`."""
    return round_up(max(share, gib / min(n.gib_per_gpu for n in nodes)))


def place(actors: list[GpuActor], nodes: tuple[GpuNode, ...]) -> tuple[list[GpuSlot], GpuActor | None]:
    """The GPUs with the actors packed onto them, and the first actor that found no room (None: all fit)."""
    slots: list[GpuSlot] = []
    node_at: list[int] = []  # the node (index into `nodes`) of each slot
    of_type: dict[str, int] = {}
    for k, n in enumerate(nodes):
        of_type[n.node_type] = of_type.get(n.node_type, -1) + 1
        for g in range(n.gpus):
            slots.append(GpuSlot(n.node_type, of_type[n.node_type], g, n.gib_per_gpu))
            node_at.append(k)
    free_cpus = [n.cpus for n in nodes]
    for actor in sorted(actors, key=lambda a: (-a.fraction, -a.gib, a.stage)):
        for slot, k in zip(slots, node_at):
            if slot.used + actor.fraction <= 1 + 1e-9 and actor.cpus <= free_cpus[k] + 1e-9:
                slot.actors.append(actor)
                free_cpus[k] -= actor.cpus
                break
        else:
            return slots, actor
    return slots, None


def no_room(actor: GpuActor, slots: list[GpuSlot], nodes: tuple[GpuNode, ...]) -> str:
    """The one-line reason `actor` does not fit: the stage, its need, and the most any GPU had left."""
    gpus = ", ".join(f"{n.gpus} x {n.gib_per_gpu:g} GiB ({n.node_type})" for n in nodes)
    left = max(((1 - s.used) * s.gib for s in slots), default=0.0)
    largest = max(n.gib_per_gpu for n in nodes)
    if actor.gib > largest:
        why = f"more than the largest GPU ({largest:g} GiB)"
    elif any(s.used + actor.fraction <= 1 + 1e-9 for s in slots):
        why = f"and the nodes of the GPUs with room have fewer than {actor.cpus:g} CPU(s) left"
    else:
        why = f"but the most any GPU has left after the other actors is {max(0.0, left):.1f} GiB"
    return (f"stage {actor.stage} needs {actor.gib:.1f} GiB of GPU memory per actor ({actor.fraction:.3f} of a GPU) "
            f"{why}; the GPUs: {gpus}; lower the stage's memory (e.g. --set stages.{actor.stage}.options."
            f"generate_batch=2 for fg_check and caption) or add GPU nodes")
