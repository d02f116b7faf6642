from __future__ import annotations

from pathlib import Path

import pytest

from imginav_core.data.synthetic import generate_layouts


@pytest.fixture(scope="session")
def synthetic_manifest(tmp_path_factory) -> Path:
    """A small synthetic set in the real manifest format, shared by the tests that only read it."""
    return generate_layouts(tmp_path_factory.mktemp("synthetic") / "set", samples=40, resolution=64, seed=3)
