"""Rows read from the decoded cache do not stay in the process's resident size: at 512 x 512 a
layout's class map is 262 KB, and the analysis alone reads ~3.5 GB of them, which a batch system
limiting the resident size (LSF's -M) would count while they stayed mapped."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from imginav_core.data.batches import CachedLayouts, RowFile
from imginav_core.data.cache import CLASS_MAPS, OFF_PALETTE_RGB, LayoutCache
from imginav_core.errors import LayoutReadError

RESOLUTION = 512
ROWS = 96  # 25 MB of class maps
OFF_PALETTE = [3, 40, 41, 90]  # rows whose exact RGB is kept too: 3 MB

# Reads every row of the cache in batches of 16 (the training loader's batch) in a fresh process,
# keeping none, and prints how far the resident size grew (VmRSS: anonymous and mapped file pages).
READ_ALL = r"""
import json, sys
from pathlib import Path
import numpy as np
from imginav_core.data.batches import CachedLayouts
from imginav_core.data.cache import LayoutCache

folder, n, r, off = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])


def resident():
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmRSS:"))


cache = LayoutCache(folder, [None] * n, r, np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.float32),
                    np.array([""] * n), np.array(off, dtype=np.int64), [])
layouts = CachedLayouts(cache, np.arange(n))
layouts.stored(np.array([0, off[0]]))  # the first read: whatever it imports or allocates once
read = 0
before = resident()
for start in range(0, n, 16):
    batch = layouts.stored(np.arange(start, min(start + 16, n)))
    read += batch["class_map"].numpy().nbytes + batch["off_palette_rgb"].numpy().nbytes
    del batch
print(json.dumps({"grew": resident() - before, "read": read}))
"""


def _write_cache(folder, rng):
    class_maps = rng.integers(0, 10, size=(ROWS, RESOLUTION, RESOLUTION), dtype=np.uint8)
    exact = rng.integers(0, 256, size=(len(OFF_PALETTE), RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
    class_maps.tofile(folder / CLASS_MAPS)
    exact.tofile(folder / OFF_PALETTE_RGB)
    return class_maps, exact


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc/self/status")
def test_reading_every_row_does_not_grow_the_resident_size_by_what_was_read(tmp_path):
    _write_cache(tmp_path, np.random.default_rng(0))
    done = subprocess.run(
        [sys.executable, "-c", READ_ALL, str(tmp_path), str(ROWS), str(RESOLUTION), json.dumps(OFF_PALETTE)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["read"] == ROWS * RESOLUTION**2 + len(OFF_PALETTE) * 3 * RESOLUTION**2
    # Copied out of a memory map, every byte read stayed resident (28 MB here); read into fresh
    # arrays, what was dropped is gone: at most a batch or two of allocator slack remains.
    assert figures["grew"] < figures["read"] / 4, figures


def test_rows_come_back_exact_in_any_pattern_of_runs_gaps_and_repeats(tmp_path):
    rng = np.random.default_rng(1)
    class_maps, exact = _write_cache(tmp_path, rng)
    reader = RowFile(tmp_path / CLASS_MAPS, ROWS, (RESOLUTION, RESOLUTION))
    for rows in ([0], [ROWS - 1], [0, 1, 2, 50, 51, 95], [7, 7, 8], [3, 5, 7], list(range(ROWS)), []):
        rows = np.array(rows, dtype=np.int64)
        got = reader.read(rows)
        assert got.shape == (len(rows), RESOLUTION, RESOLUTION) and np.array_equal(got, class_maps[rows]), rows
    cache = LayoutCache(
        tmp_path,
        [None] * ROWS,
        RESOLUTION,
        np.arange(ROWS) % 2,
        np.zeros(ROWS, dtype=np.float32),
        np.array([""] * ROWS),
        np.array(OFF_PALETTE),
        [],
    )
    layouts = CachedLayouts(cache, np.arange(10, ROWS))  # positions 30, 31 are rows 40, 41
    batch = layouts.stored(np.array([31, 2, 30, 0]))
    assert np.array_equal(batch["class_map"].numpy(), class_maps[[10, 12, 40, 41]])
    assert batch["label"].tolist() == [0, 0, 0, 1]
    assert batch["off_palette_rows"].tolist() == [2, 3] and np.array_equal(batch["off_palette_rgb"].numpy(), exact[1:3])


def test_a_cache_file_cut_short_is_named_not_read_as_zeros(tmp_path):
    (tmp_path / CLASS_MAPS).write_bytes(bytes(3 * 16 * 16 + 10))  # 3 rows and a piece of the 4th
    reader = RowFile(tmp_path / CLASS_MAPS, 4, (16, 16))
    assert reader.read(np.array([0, 2])).shape == (2, 16, 16)
    with pytest.raises(LayoutReadError, match=rf"{CLASS_MAPS}: ends before row 3 of 4 rows"):
        reader.read(np.array([2, 3]))
