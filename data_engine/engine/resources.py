"""Size each stage's actor pool from the resources the cluster actually has.

Consecutive stages that need no GPU and at most one CPU are fused into one pool (`run.fuse`, on by default): each
actor of the pool runs them in order on its batch, so a clip crosses the object store once per pool instead of
once per stage, and a small machine runs one pool of light stages per core instead of a fraction of a core per
stage. GPU stages keep a pool each, so a GPU never waits on CPU work.

Every pool gets one actor first. When the stages' CPU requests add up to more than the cluster's CPUs, each
request is scaled down to a fraction so all pools fit at once (Ray would otherwise wait forever for CPUs that
do not exist: two one-CPU actors plus a read task deadlock a 2-CPU machine). Spare CPUs then go to extra actors
of the heaviest CPU pools, spare GPU share to extra actors of GPU pools, within each pool's `max_actors` (the
smallest of its stages').

When the cluster declares its GPUs' memory (`gpu_nodes`), GPU actors are sized and packed by the memory their
stages declare instead of by `num_gpus` alone (data_engine/engine/placement.py): a chain that does not fit fails
here, before anything starts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from data_engine.engine.placement import GpuActor, GpuNode, GpuSlot, gpu_fraction, no_room, place
from data_engine.stages.base import Resources

MIN_CPU_FRACTION = 0.05


class PlanError(ValueError):
    """The stages cannot run on this cluster; the message says which stage and what to change."""


@dataclass(frozen=True)
class ClusterResources:
    cpus: float
    gpus: float
    nodes: int = 1
    node_cpus: tuple[float, ...] = ()  # per alive node; empty = one node holding all CPUs
    gpu_nodes: tuple[GpuNode, ...] = ()  # GPU nodes that declare their GPU memory; empty = plan by num_gpus only

    def describe(self) -> str:
        memory = sorted({f"{n.gib_per_gpu:g}" for n in self.gpu_nodes})
        return (f"{self.cpus:g} CPU, {self.gpus:g} GPU on {self.nodes} node(s)"
                + (f"; GPU memory {'/'.join(memory)} GiB per GPU" if memory else ""))

    @property
    def bins(self) -> list[float]:
        return list(self.node_cpus) or [self.cpus]


def packs(actor_cpus: list[float], bins: list[float]) -> bool:
    """Whether the actors fit on the nodes (first fit, largest first): a pool Ray cannot place waits forever."""
    free = sorted(bins, reverse=True)
    for need in sorted(actor_cpus, reverse=True):
        for i, room in enumerate(free):
            if need <= room + 1e-9:
                free[i] = room - need
                break
        else:
            return False
    return True


@dataclass(frozen=True)
class StagePlan:
    """A stage (or a pool) as planned: the resources one actor gets (CPU and GPU share as fitted to the cluster),
    how many actors, and the GPU memory asked of Ray per actor (the `gpu_memory_gib` resource; 0: none)."""

    name: str
    resources: Resources
    actors: int
    gpu_gib: float = 0.0

    @property
    def num_cpus(self) -> float:
        return self.resources.num_cpus

    @property
    def num_gpus(self) -> float:
        return self.resources.num_gpus

    @property
    def batch_size(self) -> int:
        return self.resources.batch_size

    @property
    def retries(self) -> int:
        return self.resources.retries

    @property
    def threads(self) -> int:
        """Threads a stage's native libraries may use per actor (its CPU share, at least one)."""
        return max(1, math.floor(self.num_cpus + 1e-9))

    def record(self) -> dict[str, Any]:
        """As the run's stats.json records it."""
        return {"name": self.name, "num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "actors": self.actors,
                "batch_size": self.batch_size, "retries": self.retries, "gpu_gib": self.gpu_gib}


@dataclass(frozen=True)
class PoolPlan(StagePlan):
    """One actor pool: its own fields are what its actors get; `stages` are what each actor runs in order (several
    when fused), sharing those resources."""

    stages: tuple[StagePlan, ...] = ()


def fusable(r: Resources) -> bool:
    """A stage that can share an actor with its neighbours: no GPU, and no more than one core."""
    return r.num_gpus == 0 and r.num_cpus <= 1


def fuse_stages(stages: list[tuple[str, Resources]]) -> list[list[tuple[str, Resources]]]:
    """Runs of consecutive fusable stages become one group; every other stage is a group of its own."""
    groups: list[list[tuple[str, Resources]]] = []
    for stage in stages:
        if groups and fusable(stage[1]) and fusable(groups[-1][-1][1]):
            groups[-1].append(stage)
        else:
            groups.append([stage])
    return groups


def pool_resources(group: list[tuple[str, Resources]]) -> Resources:
    """An actor runs one member at a time, so it needs the largest member's share, and the tightest actor limit."""
    limits = [r.max_actors for _, r in group if r.max_actors is not None]
    return Resources(num_cpus=max(r.num_cpus for _, r in group), num_gpus=max(r.num_gpus for _, r in group),
                     batch_size=group[0][1].batch_size, max_actors=min(limits) if limits else None)


def fit_cpus(requests: dict[str, float], budget: float) -> dict[str, float]:
    """One actor's CPU per stage, scaled so one actor of every stage fits in `budget` together.

    Requests that would scale below MIN_CPU_FRACTION are pinned there and the rest share what is left.
    """
    pinned: dict[str, float] = {}
    free = {n: c for n, c in requests.items() if c > 0}
    scale = 1.0
    while True:
        need = sum(free.values())
        scale = min(1.0, (budget - sum(pinned.values())) / need) if need else 1.0
        small = [n for n, c in free.items() if c * scale < MIN_CPU_FRACTION]
        if not small:
            break
        for n in small:
            pinned[n] = MIN_CPU_FRACTION
            del free[n]
    fitted = {n: 0.0 for n in requests} | pinned | {n: math.floor(c * scale * 1000) / 1000 for n, c in free.items()}
    if sum(fitted.values()) > budget + 1e-9 or any(c <= 0 for n, c in fitted.items() if requests[n] > 0):
        raise PlanError(f"{len(requests)} stages cannot share {budget:g} CPU(s); use fewer stages or a bigger cluster")
    return fitted


def plan_stages(stages: list[tuple[str, Resources]], cluster: ClusterResources, *, fuse: bool = False,
                gpu_gib: dict[str, float] | None = None) -> list[PoolPlan]:
    """The actor pools for `stages` (in order) on `cluster`; with `fuse`, runs of light CPU stages share a pool.
    `gpu_gib`: the GPU memory each stage declares per actor (placed by it when the cluster declares its own)."""
    groups = fuse_stages(stages) if fuse else [[s] for s in stages]
    gpu_gib = gpu_gib or {}
    memory = {"+".join(n for n, _ in g): max(gpu_gib.get(n, 0.0) for n, _ in g) for g in groups}
    pools = plan_pools([("+".join(n for n, _ in g), pool_resources(g)) for g in groups], cluster, memory)
    return [
        PoolPlan(pool.name, pool.resources, pool.actors, pool.gpu_gib,
                 tuple(StagePlan(name, replace(r, num_cpus=pool.num_cpus, num_gpus=pool.num_gpus), pool.actors,
                                 pool.gpu_gib)
                       for name, r in group))
        for group, pool in zip(groups, pools)
    ]


def gpu_actors(plans: list[PoolPlan]) -> list[GpuActor]:
    return [GpuActor(p.name, p.gpu_gib, p.num_gpus, p.num_cpus) for p in plans if p.num_gpus > 0
            for _ in range(p.actors)]


def gpu_placement(plans: list[PoolPlan], cluster: ClusterResources) -> list[GpuSlot]:
    """Every GPU of the cluster with the actors the plan packs onto it (empty when it declares no GPU memory)."""
    if not cluster.gpu_nodes:
        return []
    slots, _ = place(gpu_actors(plans), cluster.gpu_nodes)
    return slots


def plan_pools(stages: list[tuple[str, Resources]], cluster: ClusterResources,
               gpu_gib: dict[str, float] | None = None) -> list[StagePlan]:
    if cluster.cpus <= 0:
        raise PlanError("the cluster reports no CPUs; check `ray status` or run.num_cpus")
    wanting = [(name, r.num_gpus) for name, r in stages if r.num_gpus > 0]
    if wanting and cluster.gpus <= 0:
        asks = ", ".join(f"{name} ({n:g})" for name, n in wanting)
        sets = " ".join(f"--set stages.{name}.num_gpus=0" for name, _ in wanting)
        raise PlanError(f"{len(wanting)} stage(s) ask for a GPU but the cluster has none: {asks}; "
                        f"run on a GPU cluster or {sets}")
    memory = {name: (gpu_gib or {}).get(name, 0.0) if r.num_gpus > 0 else 0.0 for name, r in stages}
    by_memory = bool(cluster.gpu_nodes) and any(memory.values())
    gpus = {name: gpu_fraction(memory[name], r.num_gpus, cluster.gpu_nodes) if by_memory and r.num_gpus > 0
            else r.num_gpus for name, r in stages}
    gpu_need = sum(gpus.values())
    if not by_memory and gpu_need > cluster.gpus + 1e-9:
        raise PlanError(
            f"the stages ask for {gpu_need:g} GPU with one actor each but the cluster has {cluster.gpus:g}; "
            f"lower their num_gpus (e.g. --set stages.<name>.num_gpus=0.5)"
        )
    requests = {name: r.num_cpus for name, r in stages}
    budget = cluster.cpus
    cpus = fit_cpus(requests, budget)
    while not packs(list(cpus.values()), cluster.bins):  # spread over several nodes: shrink until it packs
        budget *= 0.9
        cpus = fit_cpus(requests, budget)
    actors = {name: 1 for name, _ in stages}

    def gpus_fit(counts: dict[str, int]) -> tuple[list[GpuSlot], GpuActor | None]:
        return place([GpuActor(n, memory[n], gpus[n], cpus[n]) for n, _ in stages if gpus[n] > 0
                      for _ in range(counts[n])], cluster.gpu_nodes)

    if by_memory:
        slots, left_out = gpus_fit(actors)
        if left_out is not None:
            raise PlanError(no_room(left_out, slots, cluster.gpu_nodes))
    limits = {name: (r.max_actors if r.max_actors is not None else math.inf) for name, r in stages}
    cpu_left = cluster.cpus - sum(cpus.values())
    gpu_left = cluster.gpus - gpu_need
    # Extra actors, one at a time, heaviest request first, while they fit.
    order = sorted(stages, key=lambda s: (-gpus[s[0]], -s[1].num_cpus))
    grew = True
    while grew:
        grew = False
        for name, _ in order:
            c, g = cpus[name], gpus[name]
            if actors[name] >= limits[name] or (c <= 0 and g <= 0):
                continue
            placed = [cpus[n] for n in actors for _ in range(actors[n])] + [c]
            gpu_room = (gpus_fit({**actors, name: actors[name] + 1})[1] is None if by_memory and g > 0
                        else g <= gpu_left + 1e-9)
            if c <= cpu_left + 1e-9 and gpu_room and packs(placed, cluster.bins):
                actors[name] += 1
                cpu_left -= c
                gpu_left -= g
                grew = True
    return [StagePlan(name, replace(r, num_cpus=cpus[name], num_gpus=gpus[name]), actors[name],
                      memory[name] if by_memory else 0.0) for name, r in stages]
