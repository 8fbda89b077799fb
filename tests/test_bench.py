"""scripts/bench.py stays runnable: one cheap case end to end (the benchmark is not a test).

The full benchmark runs by hand (`.venv/bin/python scripts/bench.py`); this only checks that
the script still measures and prints a table row, so it cannot rot unnoticed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "scripts" / "bench.py"


def test_quick_extraction_case_prints_a_measured_row_with_its_baseline():
    result = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--only", "extract-robot"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    # name, measured, baseline (the full-clip transcode), ratio, goal, PASS/MISS
    row = re.search(
        r"^robot 1280×704 121 fr: 2 frames → 320×180, cold\s+([\d.]+) (ms|s)\s+([\d.]+) s\s+"
        r"([\d.]+)×\s+≥5×\s+(PASS|MISS)$",
        result.stdout,
        re.MULTILINE,
    )
    assert row, result.stdout
    measured_s = float(row[1]) / (1000 if row[2] == "ms" else 1)
    baseline_s, ratio = float(row[3]), float(row[4])
    assert measured_s > 0 and baseline_s > 0
    assert abs(ratio - baseline_s / measured_s) <= 0.1 * ratio
    assert "cache hit" in result.stdout
