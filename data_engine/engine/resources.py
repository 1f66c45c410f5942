"""Size each stage's actor pool from the resources the cluster actually has.

Every stage gets one actor first. When the stages' CPU requests add up to more than the cluster's CPUs, each
request is scaled down to a fraction so all pools fit at once (Ray would otherwise wait forever for CPUs that
do not exist: two one-CPU actors plus a read task deadlock a 2-CPU machine). Spare CPUs then go to extra actors
of the heaviest CPU stages, spare GPU share to extra actors of GPU stages, within each stage's `max_actors`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from data_engine.stages.base import Resources

MIN_CPU_FRACTION = 0.05


class PlanError(ValueError):
    """The stages cannot run on this cluster; the message says which stage and what to change."""


@dataclass(frozen=True)
class ClusterResources:
    cpus: float
    gpus: float
    nodes: int = 1

    def describe(self) -> str:
        return f"{self.cpus:g} CPU, {self.gpus:g} GPU on {self.nodes} node(s)"


@dataclass(frozen=True)
class StagePlan:
    name: str
    num_cpus: float
    num_gpus: float
    actors: int
    batch_size: int
    retries: int

    @property
    def threads(self) -> int:
        """Threads a stage's native libraries may use per actor (its CPU share, at least one)."""
        return max(1, math.floor(self.num_cpus + 1e-9))


def plan_stages(stages: list[tuple[str, Resources]], cluster: ClusterResources) -> list[StagePlan]:
    if cluster.cpus <= 0:
        raise PlanError("the cluster reports no CPUs; check `ray status` or run.num_cpus")
    gpu_need = sum(r.num_gpus for _, r in stages)
    for name, r in stages:
        if r.num_gpus > 0 and cluster.gpus <= 0:
            raise PlanError(
                f"stage {name!r} asks for {r.num_gpus:g} GPU but the cluster has none; "
                f"run on a GPU cluster or --set stages.{name}.num_gpus=0"
            )
    if gpu_need > cluster.gpus + 1e-9:
        raise PlanError(
            f"the stages ask for {gpu_need:g} GPU with one actor each but the cluster has {cluster.gpus:g}; "
            f"lower their num_gpus (e.g. --set stages.<name>.num_gpus=0.5)"
        )
    cpu_need = sum(r.num_cpus for _, r in stages)
    scale = min(1.0, cluster.cpus / cpu_need) if cpu_need > 0 else 1.0
    cpus = {name: max(MIN_CPU_FRACTION, math.floor(r.num_cpus * scale * 1000) / 1000) if r.num_cpus > 0 else 0.0 for name, r in stages}
    actors = {name: 1 for name, _ in stages}
    limits = {name: (r.max_actors if r.max_actors is not None else math.inf) for name, r in stages}
    cpu_left = cluster.cpus - sum(cpus.values())
    gpu_left = cluster.gpus - gpu_need
    # Extra actors, one at a time, heaviest request first, while they fit.
    order = sorted(stages, key=lambda s: (-s[1].num_gpus, -s[1].num_cpus))
    grew = True
    while grew:
        grew = False
        for name, r in order:
            c, g = cpus[name], r.num_gpus
            if actors[name] >= limits[name] or (c <= 0 and g <= 0):
                continue
            if c <= cpu_left + 1e-9 and g <= gpu_left + 1e-9:
                actors[name] += 1
                cpu_left -= c
                gpu_left -= g
                grew = True
    return [StagePlan(name, cpus[name], r.num_gpus, actors[name], r.batch_size, r.retries) for name, r in stages]
