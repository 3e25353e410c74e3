"""The per-sample metadata table: given at record time, validated, versioned (timetravel/metadata.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from timetravel.errors import StoreError
from timetravel.metadata import read_metadata, write_metadata


def test_metadata_given_at_record_time_is_read_back(make_run):
    source = np.array(["web", "scanner", None] * 20, dtype=object)
    brightness = np.linspace(0, 1, 60)
    brightness[3] = np.nan
    store = make_run(metadata={"source": source, "brightness": brightness, "ok": np.arange(60) % 2 == 0})
    meta = store.metadata
    assert list(meta) == ["source", "brightness", "ok"]
    assert meta["source"].kind == "categorical" and meta["source"].categories == ("scanner", "web")
    assert meta["source"].as_strings()[:3].tolist() == ["web", "scanner", None]
    assert meta["brightness"].kind == "numeric" and np.isnan(meta["brightness"].values[3])
    assert meta["ok"].categories == ("False", "True")


def test_a_run_without_metadata_has_none(tiny_run):
    assert tiny_run.metadata is None


def test_wrong_length_names_the_column(make_run):
    with pytest.raises(StoreError, match="column 'source' has shape \\(59,\\) but the run has 60 samples"):
        make_run(metadata={"source": ["a"] * 59})


def test_metadata_can_be_replaced_later_as_a_dataframe(tiny_run):
    pd = pytest.importorskip("pandas")
    write_metadata(tiny_run.path, pd.DataFrame({"device": ["a", "b"] * 30}))
    assert list(tiny_run.metadata) == ["device"]
    assert not list(tiny_run.path.glob(".metadata*"))  # no temporary folders left behind


def test_unknown_format_version_is_refused(tiny_run):
    write_metadata(tiny_run.path, {"device": ["a"] * 60})
    manifest = tiny_run.path / "metadata" / "manifest.json"
    obj = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**obj, "format_version": 99}))
    with pytest.raises(StoreError, match="format_version 99 is not supported"):
        read_metadata(tiny_run.path, 60)
