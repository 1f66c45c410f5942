"""`data_engine.safe_pickle`: downloaded pickles build only the format's types; anything else is refused unrun."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from hostile_pickle import FileOpens, ReadsAFile, RunsACommand
from PIL import Image

from data_engine.safe_pickle import NUMPY_ARRAYS, PIL_IMAGES, PickledImage, UnsafePickleError, restricted_loads


def test_numpy_arrays_and_plain_values_round_trip():
    value = {"a": np.arange(12, dtype=np.uint8).reshape(3, 4), "f": np.linspace(0, 1, 5, dtype=np.float32),
             "s": np.float32(1.5), "list": [1, "two", (3.0, None)]}
    for protocol in (2, 4, 5):
        back = restricted_loads(pickle.dumps(value, protocol=protocol), NUMPY_ARRAYS)
        assert np.array_equal(back["a"], value["a"]) and back["a"].dtype == np.uint8
        assert np.array_equal(back["f"], value["f"]) and back["s"] == np.float32(1.5)
        assert back["list"] == value["list"]


def test_a_pickle_that_would_run_a_command_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    data = pickle.dumps({"annotation": RunsACommand(marker)})
    with pytest.raises(UnsafePickleError, match=r"refused to load (posix|os)\.system") as info:
        restricted_loads(data, NUMPY_ARRAYS, what="x.p.zl")
    assert "x.p.zl" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()
    # The control: plain pickle.loads does run it (so the refusal above is what kept it from running).
    pickle.loads(data)
    assert marker.exists()


def test_a_global_outside_the_list_is_refused_even_if_harmless():
    with pytest.raises(UnsafePickleError, match="collections.OrderedDict"):
        restricted_loads(pickle.dumps(__import__("collections").OrderedDict(a=1)), NUMPY_ARRAYS)


def test_a_corrupt_pickle_is_one_clear_error():
    with pytest.raises(pickle.UnpicklingError, match="not a readable pickle"):
        restricted_loads(pickle.dumps({"a": 1})[:-3], NUMPY_ARRAYS, what="broken.p")


@pytest.mark.parametrize("mode, pixels", [
    ("L", np.arange(12, dtype=np.uint8).reshape(3, 4)),
    ("RGB", np.arange(36, dtype=np.uint8).reshape(3, 4, 3)),
    ("I;16", np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000),
])
def test_a_pil_image_is_rebuilt_from_the_bytes_in_the_pickle(mode, pixels):
    image = Image.fromarray(pixels)
    assert image.mode == mode
    for protocol in (2, 4, 5):
        back = restricted_loads(pickle.dumps(image, protocol=protocol), PIL_IMAGES)
        assert isinstance(back, PickledImage) and back.mode == mode and np.array_equal(np.asarray(back), pixels)


def test_an_image_opened_from_a_file_pickles_its_pixels_and_loads_from_them(tmp_path):
    path = tmp_path / "matte.png"
    Image.fromarray(np.full((5, 6), 9, np.uint8)).save(path)
    data = pickle.dumps(Image.open(path), protocol=2)  # a PngImageFile: its pickle names the class and its file
    path.unlink()
    assert np.array_equal(np.asarray(restricted_loads(data, PIL_IMAGES)), np.full((5, 6), 9))


def test_an_image_built_from_a_path_is_refused_and_the_file_is_never_opened(tmp_path):
    secret = tmp_path / "elsewhere" / "secret.png"
    secret.parent.mkdir()
    Image.fromarray(np.full((4, 4), 201, np.uint8)).save(secret)
    data = pickle.dumps({"instance_alpha": ReadsAFile(secret)})
    with FileOpens() as opens, pytest.raises(UnsafePickleError, match="only be built from bytes inside") as info:
        restricted_loads(data, NUMPY_ARRAYS | PIL_IMAGES, what="x.p.zl")
    assert str(info.value).startswith("x.p.zl: ") and "\n" not in str(info.value)
    assert str(secret) not in opens.paths
    # The control: plain pickle.loads opens and reads it (so the refusal above is what kept the file closed).
    with FileOpens() as opens:
        assert np.asarray(pickle.loads(data)["instance_alpha"]).max() == 201
    assert str(secret) in opens.paths


def test_an_image_claiming_more_pixels_than_its_bytes_is_refused_before_any_allocation():
    data = pickle.dumps(Image.fromarray(np.zeros((2, 3), np.uint8)), protocol=2)
    size = pickle.BININT1 + b"\x03" + pickle.BININT1 + b"\x02" + pickle.TUPLE2  # (3, 2) in the image's state
    huge = (pickle.BININT + (100000).to_bytes(4, "little")) * 2 + pickle.TUPLE2
    assert data.count(size) == 1
    forged = data.replace(size, huge)  # Pillow itself would allocate 10 GB before it reads the 6 bytes
    with pytest.raises(UnsafePickleError, match="needs 10000000000 bytes, it holds 6"):
        restricted_loads(forged, PIL_IMAGES)
