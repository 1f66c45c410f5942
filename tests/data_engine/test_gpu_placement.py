"""GPU memory-aware placement: what each stage declares, how the plan packs actors onto the GPUs of a cluster's
node types, the one-line refusal of a chain that does not fit, and the shipped cluster.yaml with perception_full."""
from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from data_engine.engine.cluster_spec import cluster_from_yaml, live_gpu_nodes
from data_engine.engine.config import ConfigError, load_config
from data_engine.engine.placement import GPU_MEMORY, GpuNode, gpu_fraction
from data_engine.engine.resources import ClusterResources, PlanError, gpu_placement, plan_stages
from data_engine.engine.runner import run
from data_engine.stages import stage_class
from data_engine.stages.base import Resources
from data_engine.stages.models import CUDA_CONTEXT_GIB, GIB, QWEN3_WEIGHTS, QWEN_WEIGHTS, RELEASE_PARAMS

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "infra/ray/cluster.yaml"
QWEN_BF16_GIB = RELEASE_PARAMS[QWEN_WEIGHTS] * 2 / GIB
QWEN3_BF16_GIB = RELEASE_PARAMS[QWEN3_WEIGHTS] * 2 / GIB


def declared(name: str, **options) -> float:
    cls = stage_class(name)
    return cls.gpu_memory_gib(cls.parse_options(options))


def test_vlm_memory_is_weights_plus_working_set_per_batched_prompt():
    assert declared("caption", generate_batch=1) == pytest.approx(CUDA_CONTEXT_GIB + QWEN_BF16_GIB + 3.0)
    assert declared("caption", generate_batch=4) - declared("caption", generate_batch=1) == pytest.approx(9.0)
    assert declared("fg_check", generate_batch=8) == pytest.approx(CUDA_CONTEXT_GIB + QWEN_BF16_GIB + 16.0)
    assert declared("fg_check", dtype="float32") - declared("fg_check") == pytest.approx(QWEN_BF16_GIB)
    # The qwen3-vl backend: Qwen3-VL-8B's weights, the same working set per batched prompt.
    assert declared("caption", backend="qwen3-vl", generate_batch=1) == pytest.approx(
        CUDA_CONTEXT_GIB + QWEN3_BF16_GIB + 3.0)
    assert declared("caption", backend="qwen3-vl", generate_batch=4) - declared(
        "caption", backend="qwen3-vl", generate_batch=1) == pytest.approx(9.0)
    assert declared("fg_check", backend="qwen3-vl", generate_batch=8) == pytest.approx(
        CUDA_CONTEXT_GIB + QWEN3_BF16_GIB + 16.0)
    assert declared("inpaint", window=40) < declared("inpaint", window=80)
    assert declared("caption", preset="tiny") == CUDA_CONTEXT_GIB  # random tiny models: the CUDA context only
    assert stage_class("dedup").gpu_memory_gib(stage_class("dedup").parse_options({})) == 0.0


def test_release_parameter_counts_are_the_meta_device_builds():
    """The counts the stages declare are those of the real architectures (built on the meta device, no weights)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("perception_bench", ROOT / "benchmarks/perception.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from data_engine.stages.models import CLIP_WEIGHTS, GDINO_WEIGHTS, PROPAINTER_WEIGHTS, SAM2_WEIGHTS, SAM_WEIGHTS

    built = {name: bench.param_bytes(build, 1) for models in bench.full_size_models().values()
             for name, build, _ in models}
    assert built["CLIP ViT-L/14 (fp32)"] == RELEASE_PARAMS[CLIP_WEIGHTS]
    assert built["Grounding DINO-B (fp32)"] == RELEASE_PARAMS[GDINO_WEIGHTS]
    assert built["SAM ViT-H (fp32)"] == RELEASE_PARAMS[SAM_WEIGHTS]
    assert built["SAM 2.1 Hiera-L (fp32)"] == RELEASE_PARAMS[SAM2_WEIGHTS]
    assert built["Qwen2.5-VL-7B (bf16)"] == RELEASE_PARAMS[QWEN_WEIGHTS]
    assert built["RAFT + RFC + ProPainter (fp32)"] == RELEASE_PARAMS[PROPAINTER_WEIGHTS]
    from transformers import Qwen3VLForConditionalGeneration

    qwen3 = bench.param_bytes(lambda: Qwen3VLForConditionalGeneration(bench.qwen3_8b_config()), 1)
    assert qwen3 == RELEASE_PARAMS[QWEN3_WEIGHTS] == 8_767_123_696  # the model card's "8.77B parameters"


def test_the_sam3_segment_backend_declares_sam3_alone():
    """backend sam3 needs SAM 3's weights only (the release's parameter count, as the default Sam3VideoConfig
    builds it on the meta device), in the session dtype, plus its working set."""
    import torch
    from transformers import Sam3VideoConfig, Sam3VideoModel

    from data_engine.stages.models import SAM3_WEIGHTS
    from data_engine.stages.segment_track import WORKING_GIB

    with torch.device("meta"):
        assert sum(p.numel() for p in Sam3VideoModel(Sam3VideoConfig()).parameters()) == RELEASE_PARAMS[SAM3_WEIGHTS]
    cls = stage_class("segment")
    assert cls.weights(cls.parse_options({"backend": "sam3"})) == (SAM3_WEIGHTS,)
    sam3_gib = RELEASE_PARAMS[SAM3_WEIGHTS] * 4 / GIB
    assert declared("segment", backend="sam3") == pytest.approx(CUDA_CONTEXT_GIB + sam3_gib + WORKING_GIB["sam3"])
    assert declared("segment", backend="sam3") - declared("segment", backend="sam3", session_dtype="bfloat16") == \
        pytest.approx(sam3_gib / 2)
    assert declared("segment", backend="sam3", preset="tiny") == CUDA_CONTEXT_GIB


def two_gpus(gib: float = 44.0, cpus: float = 8.0) -> ClusterResources:
    nodes = (GpuNode("gpu_worker", 1, gib, cpus),) * 2
    return ClusterResources(2 * cpus, 2, 2, (cpus, cpus), nodes)


def test_actors_are_packed_by_memory_and_ray_is_asked_for_it():
    stages = [("a", Resources(num_gpus=0.1)), ("b", Resources(num_gpus=0.1)), ("c", Resources(num_gpus=0.2))]
    plans = plan_stages(stages, two_gpus(), gpu_gib={"a": 30.0, "b": 30.0, "c": 11.0})
    by_name = {p.name: p for p in plans}
    # Ray's per-GPU fraction carries the memory: 30 GiB of a 44 GiB GPU (rounded up to Ray's 1e-4).
    assert by_name["a"].num_gpus == pytest.approx(0.6819) and by_name["a"].gpu_gib == 30.0
    assert by_name["c"].num_gpus == 0.25
    assert gpu_fraction(1.0, 0.05, two_gpus().gpu_nodes) == 0.05  # the stage's own share when it is the larger
    # a and b take 30 GiB of each GPU; c fits once beside each of them, a third a or b nowhere.
    assert {p.name: p.actors for p in plans} == {"a": 1, "b": 1, "c": 2}
    slots = gpu_placement(plans, two_gpus())
    assert [[a.stage for a in s.actors] for s in slots] == [["a", "c"], ["b", "c"]]
    assert [s.used_gib for s in slots] == [41.0, 41.0]


def test_spare_memory_goes_to_more_actors_within_max_actors():
    stages = [("small", Resources(num_gpus=0.01, max_actors=5)), ("big", Resources(num_gpus=0.01))]
    plans = plan_stages(stages, two_gpus(cpus=16), gpu_gib={"small": 4.0, "big": 20.0})
    actors = {p.name: p.actors for p in plans}
    assert actors["small"] == 5  # capped by max_actors
    assert 4 * actors["small"] + 20 * actors["big"] <= 88 and actors["big"] >= 2


def test_random_plans_never_overfill_a_gpu():
    rng = random.Random(1)
    for _ in range(200):
        nodes = tuple(GpuNode(f"t{rng.randint(0, 1)}", rng.choice([1, 2, 4]), rng.choice([24.0, 44.0, 80.0]),
                              rng.choice([4.0, 16.0])) for _ in range(rng.randint(1, 3)))
        cluster = ClusterResources(sum(n.cpus for n in nodes), sum(n.gpus for n in nodes), len(nodes),
                                   tuple(n.cpus for n in nodes), nodes)
        stages = [(f"s{i}", Resources(num_cpus=1, num_gpus=rng.choice([0.05, 0.2]), max_actors=rng.choice([None, 2])))
                  for i in range(rng.randint(1, 5))]
        memory = {name: rng.choice([2.0, 9.0, 20.0, 35.0]) for name, _ in stages}
        try:
            plans = plan_stages(stages, cluster, gpu_gib=memory)
        except PlanError as exc:
            assert "\n" not in str(exc) and re.search(r"stage s\d needs [\d.]+ GiB", str(exc))
            continue
        slots = gpu_placement(plans, cluster)
        assert sum(len(s.actors) for s in slots) == sum(p.actors for p in plans)
        assert all(s.used <= 1 + 1e-9 and s.used_gib <= s.gib + 1e-6 for s in slots)


def test_a_chain_that_does_not_fit_fails_in_one_line_naming_stage_and_numbers():
    stages = [("caption", Resources(num_gpus=0.3)), ("fg_check", Resources(num_gpus=0.25))]
    with pytest.raises(PlanError) as too_big:
        plan_stages(stages, two_gpus(), gpu_gib={"caption": 63.9, "fg_check": 31.9})
    assert str(too_big.value).startswith("stage caption needs 63.9 GiB of GPU memory per actor")
    assert "more than the largest GPU (44 GiB)" in str(too_big.value) and "\n" not in str(too_big.value)
    three = stages + [("x", Resources(num_gpus=0.1))]
    with pytest.raises(PlanError, match=r"stage \w+ needs 30\.0 GiB .* the most any GPU has left after the other "
                                        r"actors is 14\.0 GiB; the GPUs: 1 x 44 GiB \(gpu_worker\), 1 x 44 GiB"):
        plan_stages(three, two_gpus(), gpu_gib={"caption": 30.0, "fg_check": 30.0, "x": 30.0})


def test_gpu_actors_need_cpus_on_their_node():
    # Two GPUs on a node with one CPU, the other CPUs on a CPU node: the second GPU actor has no CPU beside a GPU.
    cluster = ClusterResources(17, 2, 2, (1.0, 16.0), (GpuNode("gpu", 2, 44.0, 1.0),))
    stages = [(f"s{i}", Resources(num_cpus=1, num_gpus=0.1)) for i in range(2)]
    with pytest.raises(PlanError, match=r"^stage s\d needs 4\.0 GiB .* nodes of the GPUs with room have fewer than "
                                        r"1 CPU\(s\) left"):
        plan_stages(stages, cluster, gpu_gib={"s0": 4.0, "s1": 4.0})


@pytest.fixture
def full_config(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"")
    return [f"sources.0.input={tmp_path}", "run.check_weights=false", f"run.out={tmp_path / 'out'}"]


@pytest.mark.parametrize("name", ["perception_full", "perception_sam3"])
def test_shipped_cluster_yaml_fits_the_shipped_perception_configs(full_config, name):
    cluster = cluster_from_yaml(CLUSTER_YAML)
    assert cluster.gpu_nodes == (GpuNode("gpu_worker", 1, 44.0, 8.0),) * 2
    path = ROOT / f"infra/configs/engine/{name}.yaml"
    cfg = load_config(path, full_config)
    if name == "perception_sam3":  # the newer models, as its name says
        assert [s.options.get("backend") for s in cfg.stages if s.name in ("segment", "fg_check", "caption")] == \
            ["sam3", "qwen3-vl", "qwen3-vl"]
    summary = run(cfg, dry_run=True, cluster_file=str(CLUSTER_YAML))
    slots = gpu_placement(summary.plans, cluster)
    placed = sorted(a.stage for s in slots for a in s.actors)
    assert set(placed) == {"tag", "segment", "fg_check", "inpaint", "caption"}
    assert all(s.used_gib <= 44 and s.used <= 1 + 1e-9 for s in slots)
    # caption at generate_batch 8 (40 GiB) with fg_check (32 GiB) leaves no GPU room for segment: refused up front
    too_much = load_config(path, full_config + ["stages.caption.options.generate_batch=8"])
    with pytest.raises(PlanError, match=r"^stage \w+ needs [\d.]+ GiB of GPU memory per actor"):
        run(too_much, dry_run=True, cluster_file=str(CLUSTER_YAML))


def test_dry_run_prints_the_placement_table(full_config, capsys):
    from data_engine.cli import main

    assert main(["dataset", "--config", "perception_full", "--dry-run", "--cluster", str(CLUSTER_YAML),
                 "--no-progress", *[a for s in full_config for a in ("--set", s)]]) == 0
    err = capsys.readouterr().err
    assert "GPU placement" in err and re.search(r"gpu_worker\s*│ node 0 gpu 0 │ [\w, ]+│ [\d.]+ / 44", err)
    assert main(["dataset", "--config", "perception_full", "--cluster", str(CLUSTER_YAML),
                 *[a for s in full_config for a in ("--set", s)]]) == 2
    assert "needs --dry-run" in capsys.readouterr().err


def test_cluster_yaml_gpu_type_must_state_its_memory(tmp_path):
    bad = tmp_path / "cluster.yaml"
    bad.write_text("head_node_type: head\navailable_node_types:\n  head: {resources: {CPU: 4}}\n"
                   "  gpu: {min_workers: 1, resources: {CPU: 8, GPU: 2}}\n")
    with pytest.raises(ConfigError, match=f"node type gpu has 2 GPU.* but no {GPU_MEMORY}"):
        cluster_from_yaml(bad)


def test_live_nodes_that_declare_gpu_memory():
    nodes = [{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 2.0, GPU_MEMORY: 160.0},
              "Labels": {"ray.io/node-group": "h100"}},
             {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}, "NodeManagerAddress": "10.0.0.2"},
             {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0, GPU_MEMORY: 44.0}}]
    assert live_gpu_nodes(nodes) == (GpuNode("h100", 2, 80.0, 8.0),)


def test_the_pools_ask_ray_for_the_gpu_share_and_memory(monkeypatch):
    import ray.data

    from data_engine.engine.pipeline import build_dataset

    asked = []

    class Recorder:
        def map_batches(self, fn, **kwargs):
            asked.append(kwargs)
            return self

    monkeypatch.setattr(ray.data, "from_items", lambda *a, **k: Recorder())
    stages = [("split", Resources(num_cpus=1)), ("caption", Resources(num_gpus=0.3))]
    plans = plan_stages(stages, two_gpus(), gpu_gib={"caption": 27.95})
    build_dataset([], plans, {}, None)
    cpu, gpu = asked
    assert "resources" not in cpu and cpu["num_gpus"] is None
    assert gpu["num_gpus"] == pytest.approx(0.6353) and gpu["resources"] == {GPU_MEMORY: 27.95}
