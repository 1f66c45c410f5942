"""The GPU nodes a plan packs onto: from a Ray cluster launcher YAML (`layerflow dataset --cluster FILE --dry-run`),
from the live cluster's nodes, or from this machine's devices for a local run.

A cluster YAML's node types count with the nodes a run starts with: the head once, a worker type `min_workers`
times (the engine plans on the nodes that are up when the run starts). Each type's `resources` states its CPU and,
for a GPU type, its GPU and `gpu_memory_gib` (all its GPUs together): the figures `ray start` gives Ray, so the
plan proves a fit with the same numbers Ray enforces.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from data_engine.engine.config import ConfigError
from data_engine.engine.placement import GPU_MEMORY, GpuNode
from data_engine.engine.resources import ClusterResources

NODE_GROUP_LABEL = "ray.io/node-group"  # the node type a Ray autoscaler started the node as
GIB = 1024**3


def cluster_from_yaml(path: str | Path) -> ClusterResources:
    """The nodes of a Ray cluster YAML's node types, as a run on it starts with them."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"--cluster {path}: not a readable YAML file ({str(exc).splitlines()[0]})") from exc
    types = (spec or {}).get("available_node_types") if isinstance(spec, dict) else None
    if not isinstance(types, dict) or not types:
        raise ConfigError(f"--cluster {path}: no available_node_types; give a Ray cluster launcher YAML")
    head = spec.get("head_node_type")
    node_cpus: list[float] = []
    gpu_nodes: list[GpuNode] = []
    gpus = 0.0
    for name, node_type in types.items():
        res = node_type.get("resources") or {}
        if "CPU" not in res:
            raise ConfigError(f"--cluster {path}: node type {name} states no CPU in its resources; set resources: "
                              "{CPU: <vCPUs>, GPU: <GPUs>, gpu_memory_gib: <GiB of all its GPUs>}")
        count = 1 if name == head else int(node_type.get("min_workers", 0))
        node_gpus = int(res.get("GPU", 0))
        if node_gpus and not res.get(GPU_MEMORY):
            raise ConfigError(f"--cluster {path}: node type {name} has {node_gpus} GPU(s) but no {GPU_MEMORY} in its "
                              "resources; add the GiB of GPU memory of all its GPUs")
        node_cpus += [float(res["CPU"])] * count
        gpus += node_gpus * count
        if node_gpus:
            gpu_nodes += [GpuNode(name, node_gpus, float(res[GPU_MEMORY]) / node_gpus, float(res["CPU"]))] * count
    return ClusterResources(sum(node_cpus), gpus, len(node_cpus), tuple(node_cpus), tuple(gpu_nodes))


def live_gpu_nodes(nodes: list[dict[str, Any]]) -> tuple[GpuNode, ...]:
    """The alive nodes (`ray.nodes()`) that have GPUs and declare their memory."""
    out = []
    for n in nodes:
        res = n["Resources"]
        if n.get("Alive") and res.get("GPU", 0) >= 1 and res.get(GPU_MEMORY, 0) > 0:
            kind = (n.get("Labels") or {}).get(NODE_GROUP_LABEL) or n.get("NodeManagerAddress", "node")
            out.append(GpuNode(kind, int(res["GPU"]), res[GPU_MEMORY] / int(res["GPU"]), float(res.get("CPU", 0))))
    return tuple(out)


def local_gpu_memory_gib(num_gpus: float | None) -> float:
    """GiB of memory on this machine's first `num_gpus` CUDA devices (all when None); 0 without CUDA."""
    try:
        import torch
    except ImportError:
        return 0.0
    if not torch.cuda.is_available():
        return 0.0
    count = torch.cuda.device_count() if num_gpus is None else min(int(num_gpus), torch.cuda.device_count())
    return sum(torch.cuda.get_device_properties(i).total_memory for i in range(count)) / GIB
