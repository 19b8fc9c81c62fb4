"""A real Ctrl-C (SIGINT) to the CLI: checkpoint written, exit 130, `--resume` finishes the run."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).with_name("tunesmith")


def test_sigint_saves_checkpoint_and_resume_finishes(toy_csv, tiny_models, tmp_path):
    out = tmp_path / "run"
    args = [str(BIN), "train", str(toy_csv), "--model", str(tiny_models["bert"]), "--epochs", "6",
            "--batch-size", "2", "--patience", "0", "--out", str(out)]
    env = {**os.environ, "COLUMNS": "200"}
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    for line in p.stderr:  # the first epoch's line: we are mid-training (last.pt is not written every epoch)
        seen.append(line)
        if line.startswith("epoch 1:"):
            break
    assert p.poll() is None, "".join(seen)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert (out / "checkpoint" / "last.pt").exists()
    assert p.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    assert not (out / "metrics.json").exists()
    done = subprocess.run([str(BIN), "train", "--resume", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["history"]) == 6 and m["test"]["n"] == 24
