from __future__ import annotations

from pathlib import Path

import pytest
import torch

from imginav_core.data.synthetic import generate_layouts


@pytest.fixture(scope="session")
def synthetic_manifest(tmp_path_factory) -> Path:
    """A small synthetic set in the real manifest format, shared by the tests that only read it."""
    return generate_layouts(tmp_path_factory.mktemp("synthetic") / "set", samples=40, resolution=64, seed=3)


@pytest.fixture
def one_thread():
    """Train on one CPU thread: torch's threads wait for each other at every operation, so on a
    shared 2-core machine a busy core makes the tiny test models ~10x slower with two. For tests
    of files and messages, not of speed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
