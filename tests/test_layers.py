"""The import contracts in pyproject.toml ([tool.importlinter]) hold: layers stay layers, no cycles
between them, and the CPU engine (tunesmith.accel) imports nothing of tunesmith but errors and config."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    assert lint.exists(), f"{lint} missing: install the test extra (pip install -e '.[test]')"
    # --no-cache: the graph of this checkout, never a cached one (it takes well under a second).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"lint-imports failed:\n{r.stdout}\n{r.stderr}"
