"""--nproc refuses, in one line (exit 2), an embedding loss that needs the whole batch in one process:
--mini-batch (GradCache's second forward is not one DDP can sync). Pairs, labelled texts and scored pairs
gather what they need from every process: tests/embedding/test_embedding_ddp.py."""
import os
import subprocess
import sys

from conftest import one_line_error, write_csv

WORDS = "apple river castle doctor guitar hammer jacket tiger eagle piano".split()


def test_nproc_refuses_gradcache(tiny_models, tmp_path):
    data = write_csv(tmp_path / "pairs.csv", [{"anchor": w, "positive": f"a short note on {w} number {i}"}
                                              for i in range(4) for w in WORDS])
    res = subprocess.run([sys.executable, "-m", "tunesmith.cli", "train", str(data), "--model",
                          str(tiny_models["bert"]), "--epochs", "1", "--bf16", "off", "--max-length", "16",
                          "--mini-batch", "4", "--nproc", "2", "--out", str(tmp_path / "run")], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "TUNESMITH_CACHE": str(tmp_path / "cache")})
    line = one_line_error(res.returncode, res.stderr)
    assert "--task embedding trains in one process only here (--mini-batch" in line
