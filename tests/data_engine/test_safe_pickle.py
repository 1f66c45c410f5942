"""`data_engine.safe_pickle`: downloaded pickles build only the format's types; anything else is refused unrun."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from hostile_pickle import RunsACommand
from data_engine.safe_pickle import NUMPY_ARRAYS, UnsafePickleError, restricted_loads


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
