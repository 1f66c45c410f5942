"""Engine config, overrides, stage registry, resource planning, fail-fast checks, the folder's recorded config and
the CLI (no Ray started)."""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from data_engine.cli import main
from data_engine.defaults import config_path, configs_dir
from data_engine.engine.config import DEFAULT_CONFIG, ConfigError, load_config, parse_config
from data_engine.engine.folder_config import FOLDER_CONFIG_NAME, sample_settings, write_record
from data_engine.engine.inputs import typed_sources
from data_engine.engine.resources import ClusterResources, PlanError, fuse_stages, packs, plan_stages
from data_engine.engine.runner import prepare, stage_setup
from data_engine.engine.state import RECORDS_DIR
from data_engine.schema import ENGINE_VERSION
from data_engine.stages import STAGES, stage_class
from data_engine.stages.base import Resources
from data_engine.video_io import write_video

SYNTHETIC_CONFIG = configs_dir("engine") / "synthetic_videos.yaml"


def test_default_config_is_the_tiny_perception_chain():
    cfg = load_config()
    assert [s.type for s in cfg.sources] == ["synthetic_videos", "frames"]
    assert [s.name for s in cfg.stages] == [
        "probe", "split", "tag", "segment", "dedup", "fg_check", "inpaint", "compose", "caption", "encode"
    ]
    assert all(s.resources.get("num_gpus", 0) == 0 for s in cfg.stages)  # tiny models run anywhere


def test_synthetic_config_is_the_paper_clip_policy_on_synthetic_videos():
    cfg = load_config(SYNTHETIC_CONFIG)
    assert (cfg.clip.num_frames, cfg.clip.height, cfg.clip.width, cfg.clip.fps) == (16, 480, 720, 8.0)
    assert [s.type for s in cfg.sources] == ["synthetic_videos"]
    assert [s.name for s in cfg.stages] == ["probe", "split", "synthetic_layers", "compose", "encode"]
    assert cfg.out == Path("outputs/dataset_synthetic")


def test_overrides_reach_typed_fields(tmp_path):
    cfg = load_config(SYNTHETIC_CONFIG, ["stages.split.num_cpus=0.5", "clip.fps=12", "sources.0.num_clips=3",
                                       "stages.encode.options.lossless_alpha=true", "run.maxcount=7"],
                      out=str(tmp_path), limit=2)
    split = next(s for s in cfg.stages if s.name == "split")
    assert split.resources == {"num_cpus": 0.5}
    assert cfg.clip.fps == 12.0 and cfg.sources[0].options["num_clips"] == 3
    assert cfg.run.maxcount == 7 and cfg.run.limit == 2 and cfg.run.out == str(tmp_path)
    stages = {s.name: s for s in stage_setup(cfg)}
    assert stages["split"].resources.num_cpus == 0.5 and stages["split"].resources.batch_size == 1
    assert stages["encode"].given == {"lossless_alpha": True} and stages["encode"].opts.lossless_alpha is True
    assert stages["split"].opts.fps == 12.0  # the clip policy reaches the stages that use it, typed


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["stages.split.num_cpu=1"], "unknown key(s) ['num_cpu']"),
        (["stages.nope.num_gpus=0.5"], "no stage named 'nope'"),
        (["clip.fsp=3"], "clip: unknown key(s) ['fsp']"),
        (["runn.limit=3"], "unknown section 'runn'"),
        (["run.limit"], "expected KEY=VALUE"),
        (["stages.split.options.fpss=3"], "stages.split: unknown option(s) ['fpss']"),
        (["clip.resize=squash"], "clip.resize must be 'cover' or 'stretch'"),
        (["sources.0.type=tape"], "unknown source type"),
        (["sources.0.colour=red"], "unknown key(s) ['colour']"),
        (["sources.3.num_clips=1"], "use the entry's index"),
    ],
)
def test_bad_config_is_one_clear_line(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as err:
        cfg = load_config(SYNTHETIC_CONFIG, overrides, out=str(tmp_path))
        prepare(cfg)
    text = str(err.value)
    assert message in text and "\n" not in text


def test_stage_list_errors(tmp_path):
    raw = yaml.safe_load(SYNTHETIC_CONFIG.read_text())
    raw["run"]["out"] = str(tmp_path)
    with pytest.raises(ConfigError, match="unknown stage 'tagg'"):
        stage_setup(parse_config({**raw, "stages": ["tagg"] + raw["stages"]}))
    with pytest.raises(ConfigError, match="'encode' must be the last stage"):
        stage_setup(parse_config({**raw, "stages": ["probe", "encode", "split", "compose"]}))
    with pytest.raises(ConfigError, match="listed twice"):
        parse_config({**raw, "stages": ["probe", "probe"]})


def test_registry_names_every_stage_lazily():
    for name in ("probe", "split", "compose", "encode", "synthetic_layers"):
        assert stage_class(name).name == name
    assert {"tag", "segment", "dedup", "fg_check", "inpaint", "caption"} <= set(STAGES)
    assert STAGES["segment"] == "data_engine.stages.segment_track:SegmentTrackStage"
    assert stage_class("data_engine.stages.probe:ProbeStage") is stage_class("probe")  # a stage by import path
    with pytest.raises(KeyError, match="cannot be imported"):
        stage_class("no_such_module:Stage")
    with pytest.raises(KeyError, match="package.module:Class"):
        stage_class("no_such_stage")


# -- resource planning ------------------------------------------------------------------------------------------------
def test_plan_fits_two_cpus_with_fractions():
    stages = [("source", Resources(num_cpus=0.25)), ("a", Resources(num_cpus=1)), ("b", Resources(num_cpus=1))]
    plans = plan_stages(stages, ClusterResources(cpus=2, gpus=0))
    assert all(p.actors == 1 for p in plans)  # 2.25 CPUs asked of 2: scaled, never over-asked
    assert sum(p.num_cpus * p.actors for p in plans) <= 2
    assert plans[1].num_cpus == pytest.approx(2 / 2.25, abs=1e-3)


def test_plan_spends_spare_cpus_and_respects_max_actors():
    plans = plan_stages([("enc", Resources(num_cpus=1)), ("cap", Resources(num_cpus=1, max_actors=2))],
                        ClusterResources(cpus=8, gpus=0))
    assert {p.name: p.actors for p in plans} == {"enc": 6, "cap": 2}


def test_plan_random_configs_never_exceed_the_cluster():
    rng = random.Random(0)
    for _ in range(300):
        node_cpus = tuple(rng.choice([1, 2, 3, 8]) for _ in range(rng.randint(1, 3)))
        cluster = ClusterResources(cpus=sum(node_cpus), gpus=rng.choice([0, 1, 4]), node_cpus=node_cpus)
        stages = []
        for i in range(rng.randint(1, 7)):
            gpu = rng.choice([0, 0, 0.25, 0.5, 1]) if cluster.gpus else 0
            stages.append((f"s{i}", Resources(num_cpus=rng.choice([0.1, 0.25, 1, 2, 4]), num_gpus=gpu,
                                              max_actors=rng.choice([None, 1, 3]))))
        if sum(r.num_gpus for _, r in stages) > cluster.gpus:
            continue
        plans = plan_stages(stages, cluster, fuse=rng.random() < 0.5)
        assert all(p.actors >= 1 for p in plans)
        assert sum(p.num_cpus * p.actors for p in plans) <= cluster.cpus + 1e-6
        assert packs([p.num_cpus for p in plans for _ in range(p.actors)], list(node_cpus))
        assert sum(p.num_gpus * p.actors for p in plans) <= cluster.gpus + 1e-6
        members = [s for p in plans for s in p.stages]
        assert [s.name for s in members] == [n for n, _ in stages]  # every stage once, in order
        assert all(s.actors <= (r.max_actors or 10**6) for s, (_, r) in zip(members, stages))
        assert all(len(p.stages) == 1 for p in plans if p.num_gpus > 0)


def test_fusion_groups_light_cpu_runs_and_keeps_member_settings():
    stages = [("source", Resources(num_cpus=0.25)), ("probe", Resources(num_cpus=0.25, batch_size=4)),
              ("split", Resources(num_cpus=1, retries=3)), ("tag", Resources(num_gpus=0.05)),
              ("segment", Resources(num_gpus=0.15)), ("dedup", Resources(num_cpus=0.5, batch_size=8)),
              ("inpaint", Resources(num_gpus=0.2)), ("compose", Resources(num_cpus=0.5, max_actors=3)),
              ("encode", Resources(num_cpus=1)), ("heavy", Resources(num_cpus=4))]
    assert [[n for n, _ in g] for g in fuse_stages(stages)] == [
        ["source", "probe", "split"], ["tag"], ["segment"], ["dedup"], ["inpaint"], ["compose", "encode"], ["heavy"]]
    plans = plan_stages(stages, ClusterResources(cpus=64, gpus=1), fuse=True)
    head, tail = plans[0], plans[5]
    assert head.name == "source+probe+split" and head.num_cpus == 1 and head.batch_size == 1  # the first member's
    assert [(s.batch_size, s.retries) for s in head.stages] == [(1, 1), (4, 1), (1, 3)]
    assert tail.actors == 3 and {s.actors for s in tail.stages} == {3}  # compose's max_actors binds the pool
    unfused = plan_stages(stages, ClusterResources(cpus=16, gpus=1))
    assert [p.name for p in unfused] == [n for n, _ in stages]


def test_plan_packs_actors_onto_nodes():
    stages = [(f"s{i}", Resources(num_cpus=1)) for i in range(3)]
    cluster = ClusterResources(cpus=3, gpus=0, nodes=2, node_cpus=(1.5, 1.5))  # 3 x 1 CPU fits the sum, not the nodes
    plans = plan_stages(stages, cluster)
    assert packs([p.num_cpus for p in plans for _ in range(p.actors)], [1.5, 1.5])
    assert not packs([1, 1, 1], [1.5, 1.5]) and packs([1, 0.5, 1, 0.5], [1.5, 1.5])


def test_plan_gpu_stage_without_gpus_says_how_to_fix():
    with pytest.raises(PlanError, match=r"--set stages.tag.num_gpus=0"):
        plan_stages([("tag", Resources(num_gpus=0.5))], ClusterResources(cpus=4, gpus=0))
    with pytest.raises(PlanError, match="ask for 1.5 GPU"):
        plan_stages([("a", Resources(num_gpus=1)), ("b", Resources(num_gpus=0.5))], ClusterResources(4, 1))


# -- fail fast, dry run, CLI ------------------------------------------------------------------------------------------
def test_model_free_config_on_arbitrary_videos_fails_fast(tmp_path):
    write_video(tmp_path / "videos" / "clip.mp4", np.zeros((20, 32, 48, 3), np.uint8), 8)
    cfg = load_config(SYNTHETIC_CONFIG, input=str(tmp_path / "videos"), out=str(tmp_path / "out"))
    with pytest.raises(ConfigError, match="perception config"):
        prepare(cfg)


def test_stage_contract_is_checked_at_plan_time(tmp_path, capsys):
    """A stage that reads a field that neither the sources nor an earlier stage write: one line naming the stage,
    the field and what writes it, before anything runs (--dry-run too); finished clips need no video stage."""
    raw = yaml.safe_load(SYNTHETIC_CONFIG.read_text())
    raw["run"]["out"] = str(tmp_path / "out")
    with pytest.raises(ConfigError) as err:
        prepare(parse_config({**raw, "stages": ["probe", "split", "compose", "encode"]}))
    assert str(err.value).startswith("stages.compose reads 'bg', but neither sources[0] (synthetic_videos) nor an "
                                     "earlier stage writes it; 'bg' is written by stages synthetic_layers, inpaint")
    with pytest.raises(ConfigError, match="stages.split reads 'probe'.* written by stage probe$"):
        prepare(parse_config({**raw, "stages": ["split", "synthetic_layers", "compose", "encode"]}))
    writers = "written by stages compose, image_inpaint and sources synthetic"
    with pytest.raises(ConfigError, match=f"stages.encode reads 'clip'.* {writers}"):
        prepare(parse_config({**raw, "stages": ["probe", "split", "synthetic_layers"]}))
    layered = [{"type": "synthetic_world", "num_clips": 2, "num_frames": 4, "height": 32, "width": 48}]
    assert prepare(parse_config({**raw, "sources": layered, "stages": ["encode"]})).items
    cfg_file = tmp_path / "no_compose.yaml"
    cfg_file.write_text(yaml.safe_dump({**raw, "stages": ["probe", "split", "synthetic_layers", "encode"]}))
    assert main(["dataset", "--dry-run", "--config", str(cfg_file)]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith("error: stages.encode reads 'clip'")


@pytest.mark.parametrize("name", ["perception_tiny", "synthetic_videos", "demo"])
def test_shipped_configs_keep_the_stage_contract(tmp_path, name):
    prepare(load_config(DEFAULT_CONFIG.parent / f"{name}.yaml", out=str(tmp_path)))


def test_cli_dry_run_prints_plan_and_starts_nothing(tmp_path, capsys):
    import ray

    code = main(["dataset", "--dry-run", "--config", str(SYNTHETIC_CONFIG), "--out", str(tmp_path / "out"),
                 "--set", "sources.0.num_clips=3", "--limit", "2", "--set", "run.num_cpus=2"])
    err = capsys.readouterr().err
    assert code == 0
    assert "3 listed, 0 done in earlier runs, 2 to process" in err and "2 CPU" in err
    for stage in ("source", "probe", "split", "synthetic_layers", "compose", "encode"):
        assert stage in err
    assert not ray.is_initialized() and not (tmp_path / "out" / "_work").exists()


def test_cli_bad_override_exits_with_one_line(tmp_path, capsys):
    code = main(["dataset", "--dry-run", "--config", str(SYNTHETIC_CONFIG), "--out", str(tmp_path),
                 "--set", "stages.tag.num_gpus=0.5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --set stages.tag.num_gpus")


def test_cli_weights_check_lists_present_and_missing(tmp_path, monkeypatch, capsys):
    from data_engine import weights

    monkeypatch.setenv(weights.ENV_VAR, str(tmp_path))
    registry = weights.load_registry()
    assert main(["weights", "check"]) == 1
    lines = capsys.readouterr().out.splitlines()
    for name, spec in registry.items():
        [line] = [ln for ln in lines if ln.startswith(f"{name}: ")]
        assert "missing" in line and spec.hub_id in line and str(tmp_path / spec.subdir) in line
    for spec in registry.values():
        for f in spec.files or ("",):
            target = tmp_path / spec.subdir / f
            target.parent.mkdir(parents=True, exist_ok=True)
            if f:
                target.write_text('{"weight_map": {}}' if f.endswith(".index.json") else "{}")
    assert main(["weights", "check"]) == 0
    assert "missing" not in capsys.readouterr().out


@pytest.mark.parametrize("config, option", [("mulan", "annotations"), ("image_matting", "root"),
                                            ("video_matting", "root"), ("copy_paste", "shards"),
                                            ("layered_images", "root")])
def test_input_points_a_dataset_config_at_the_folder(tmp_path, config, option):
    """`make dataset CONFIG=mulan ARGS="--input DIR"`: the config's own source reads DIR, its other options kept."""
    shipped = yaml.safe_load((configs_dir("engine") / f"{config}.yaml").read_text())["sources"][0]
    cfg = load_config(configs_dir("engine") / f"{config}.yaml", input=str(tmp_path))
    (source,) = cfg.sources
    assert source.type == config
    assert source.options[option] == str(tmp_path)
    assert {k: v for k, v in source.options.items() if k != option} == \
        {k: v for k, v in shipped.items() if k not in ("type", option)}


def test_input_gives_a_video_config_a_videos_source(tmp_path):
    cfg = load_config(configs_dir("engine") / "perception_tiny.yaml", input=str(tmp_path))
    assert [(s.type, s.options) for s in cfg.sources] == [("videos", {"input": str(tmp_path)})]


# -- typed values, installed configs by name --------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("stages.image_inpaint.options.steps=abc",
     "stages.image_inpaint.options.steps must be an integer, got 'abc' (str)"),
    ("clip.num_frames=8.5", "clip.num_frames must be an integer, got 8.5 (float)"),
    ("stages.caption.num_gpus=half", "stages.caption.num_gpus must be a number, got 'half' (str)"),
    ("run.maxcount=[1]", "run.maxcount must be an integer, got [1] (list)"),
    ("sources.0.seed=abc", "sources.0.seed must be an integer, got 'abc' (str)"),
])
def test_a_wrong_typed_value_names_its_key_and_the_type_it_takes(tmp_path, capsys, override, message):
    code = main(["dataset", "--config", "image_matting", "--dry-run", "--out", str(tmp_path / "out"),
                 "--set", override])
    assert (code, capsys.readouterr().err.strip().splitlines()) == (2, [f"error: {message}"])


def test_help_lists_every_installed_config(capsys):
    with pytest.raises(SystemExit):
        main(["dataset", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    config_help = help_text[help_text.index("--config CONFIG engine"):help_text.index("--input INPUT what")]
    installed = sorted(p.stem for p in configs_dir("engine").glob("*.yaml"))
    assert len(installed) >= 10 and all(re.search(rf"\b{name}\b", config_help) for name in installed)


def test_an_installed_config_is_not_shadowed_by_a_folder_of_its_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for name in ("synthetic_videos", "mulan"):
        (tmp_path / name).mkdir()
    assert config_path("engine", "mulan") == configs_dir("engine") / "mulan.yaml"
    assert main(["dataset", "--dry-run", "--config", "synthetic_videos", "--out", str(tmp_path / "out")]) == 0
    assert f"config {configs_dir('engine') / 'synthetic_videos.yaml'}" in " ".join(capsys.readouterr().err.split())
    (tmp_path / "mine").write_text(SYNTHETIC_CONFIG.read_text())  # a file is a path, suffix or not
    assert config_path("engine", "mine") == Path("mine")


# -- the folder's config ----------------------------------------------------------------------------------------------
def test_sample_settings_leave_out_what_changes_no_sample(tmp_path):
    def settings(*overrides: str) -> dict:
        cfg = load_config(SYNTHETIC_CONFIG, list(overrides), out=str(tmp_path))
        return sample_settings(cfg, typed_sources(cfg), stage_setup(cfg))

    base = settings()
    assert base["clip.num_frames"] == 16 and base["sources.0.type"] == "synthetic_videos"
    assert base["stages"] == ["probe", "split", "synthetic_layers", "compose", "encode"]
    assert "stages.split.options.fps" not in base  # the clip: section's, named there once
    assert settings("run.maxcount=3", "run.num_cpus=1", "run.limit=2", "run.progress=false",
                    "run.retry_quarantined=true", "stages.split.num_cpus=0.5", "stages.encode.retries=3") == base
    changed = settings("clip.num_frames=8", "stages.encode.options.crf=30", "stages.split.options.fps=4")
    assert sorted(k for k in base.keys() | changed.keys() if base.get(k) != changed.get(k)) == [
        "clip.num_frames", "stages.encode.options.crf", "stages.split.options.fps"]


def test_a_folder_with_work_but_no_recorded_config_is_not_resumed(tmp_path):
    out = tmp_path / "old"
    (out / RECORDS_DIR).mkdir(parents=True)
    (out / RECORDS_DIR / "0.json").write_text(json.dumps({"input": "x", "status": "ok", "keys": []}))
    with pytest.raises(ConfigError, match=rf"{out} holds a dataset but no {FOLDER_CONFIG_NAME} .* another --out"):
        prepare(load_config(SYNTHETIC_CONFIG, out=str(out)))


def test_a_folder_without_work_takes_the_config_of_the_run_that_fills_it(tmp_path):
    """A first run that stopped before any input (a plan error, a kill) leaves only the record: another config
    may take the folder, and its record replaces the old one."""
    out = tmp_path / "out"
    write_record(out, prepare(load_config(SYNTHETIC_CONFIG, out=str(out))).folder_record)
    other = prepare(load_config(SYNTHETIC_CONFIG, ["clip.num_frames=8"], out=str(out)))
    assert write_record(out, other.folder_record)["sample_settings"]["clip.num_frames"] == 8
    recorded = json.loads((out / FOLDER_CONFIG_NAME).read_text())
    assert recorded["sample_settings"]["clip.num_frames"] == 8 and recorded["config"] == str(SYNTHETIC_CONFIG)
    assert recorded["resolved"]["clip"]["num_frames"] == 8 and recorded["engine_version"] == ENGINE_VERSION
