"""Missing weights and packages each give one clear line (the remote-code opt-in: test_release_weights.py)."""
from __future__ import annotations

import sys

import pytest

from data_engine.stages import models, sd_inpaint
from data_engine.weights import MissingWeightsError, missing_files, resolve, spec

FULL_BUILDERS = [
    (models.build_clip, models.CLIP_WEIGHTS),
    (models.build_grounding_dino, models.GDINO_WEIGHTS),
    (models.build_sam, models.SAM_WEIGHTS),
    (models.build_sam2_video, models.SAM2_WEIGHTS),
    (models.build_qwen_vl, models.QWEN_WEIGHTS),
    (lambda preset: models.build_qwen_vl(preset, "qwen3-vl"), models.QWEN3_WEIGHTS),
    (models.build_propainter, models.PROPAINTER_WEIGHTS),
    (sd_inpaint.build_sd_inpaint, sd_inpaint.SD_INPAINT_WEIGHTS),
]


@pytest.mark.parametrize("builder,name", FULL_BUILDERS, ids=[n for _, n in FULL_BUILDERS])
def test_missing_weights_name_model_path_and_hub_id(builder, name, tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERFLOW_WEIGHTS", str(tmp_path))
    with pytest.raises(MissingWeightsError) as info:
        builder("full")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{name}:")
    assert str(tmp_path / spec(name).subdir) in message
    assert spec(name).hub_id in message


def test_missing_ram_package_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ram", None)  # makes `import ram` raise ImportError
    monkeypatch.setitem(sys.modules, "ram.models", None)
    with pytest.raises(models.MissingPackageError) as info:
        models.build_ram("full")
    assert "pip install git+https://github.com/xinyu1205/recognize-anything.git" in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        models.check_preset("huge")


def test_tag_list_is_the_ram_plus_vocabulary():
    tags = models.tag_list()
    assert len(tags) == 4585 and len(set(tags)) == 4585
    assert tags[:2] == ["3D CG rendering", "3D glasses"] and tags[-1] == "zoo"


def test_resolve_returns_a_file_that_exists_and_check_agrees(tmp_path):
    folder = tmp_path / spec(models.SAM_WEIGHTS).subdir
    folder.mkdir()
    (folder / models.SAM_FILE).write_bytes(b"weights")
    assert resolve(models.SAM_WEIGHTS, models.SAM_FILE, tmp_path) == folder / models.SAM_FILE
    assert missing_files(models.SAM_WEIGHTS, tmp_path) == []


def test_resolve_needs_every_registry_file_even_when_a_loader_names_one(tmp_path):
    name = models.PROPAINTER_WEIGHTS
    folder = tmp_path / spec(name).subdir
    folder.mkdir()
    (folder / models.PROPAINTER_FILES["raft"]).write_bytes(b"weights")
    with pytest.raises(MissingWeightsError, match=models.PROPAINTER_FILES["rfc"]):
        resolve(name, models.PROPAINTER_FILES["raft"], tmp_path)
    assert len(missing_files(name, tmp_path)) == 2
