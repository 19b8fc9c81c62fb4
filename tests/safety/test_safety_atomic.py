"""Finding 3 of issue #20: final artifacts appear whole or not at all, even under SIGKILL."""
import os
import signal
import subprocess
import sys

import pytest

from safety_runs import clone, finished_run, interrupted_run, one_line_error, run_cli, safety_data  # noqa: F401

import tunesmith
from tunesmith.errors import TunesmithError
from tunesmith.run import open_run

# Runs `tunesmith train --resume` with the model's save killed half way: config.json written empty, then SIGKILL.
KILL_IN_MODEL_SAVE = """
import os, signal, sys
from pathlib import Path
import transformers
def save(self, d, *a, **k):
    Path(d).mkdir(parents=True, exist_ok=True)
    (Path(d) / "config.json").write_text("")
    os.kill(os.getpid(), signal.SIGKILL)
transformers.PreTrainedModel.save_pretrained = save
sys.argv = ["tunesmith", "train", "--resume", "--out", sys.argv[1]]
from tunesmith.cli import main
main()
"""

KILL_IN_ONNX_EXPORT = """
import os, signal, sys
import torch
def export(model, args, f, *a, **k):
    with open(f, "wb") as fh:
        fh.write(b"half a graph")
    os.kill(os.getpid(), signal.SIGKILL)
torch.onnx.export = export
from tunesmith.export import export_run
export_run(sys.argv[1], "onnx")
"""


def _killed(script, arg):
    p = subprocess.run([sys.executable, "-c", script, str(arg)], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == -signal.SIGKILL, p.stderr


def test_sigkill_during_the_final_model_save_leaves_no_finished_looking_run(interrupted_run, tmp_path, capsys,
                                                                          monkeypatch, safety_data):
    run = clone(interrupted_run, tmp_path / "run")
    _killed(KILL_IN_MODEL_SAVE, run)
    assert not (run / "model" / "config.json").exists()
    with pytest.raises(TunesmithError, match="resume"):
        open_run(run)
    code, _, err = run_cli(["predict", run, safety_data], capsys, monkeypatch)
    assert "--resume" in one_line_error(code, err)
    done = tunesmith.train(resume=True, out=str(run))  # the half-written temp folder does not get in the way
    assert done.metrics["test"]["n"] > 0
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]
    assert len(tunesmith.predict(run, ["my invoice"])) == 1


def test_a_killed_onnx_export_does_not_block_the_next(finished_run, tmp_path):
    from tunesmith.export import export_run

    run = clone(finished_run[0].path, tmp_path / "run")
    _killed(KILL_IN_ONNX_EXPORT, run)
    assert not (run / "export" / "onnx" / "model.onnx").exists()  # the partial graph never had the final name
    res = export_run(run, "onnx")
    assert res["parity"]["n"] > 0 and (run / "export" / "onnx" / "model.onnx").stat().st_size > 1000
    assert sorted(p.name for p in (run / "export").iterdir()) == ["onnx"]  # the killed export's temp folder is gone


def test_save_model_replaces_an_earlier_model_whole(tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from tunesmith.models.registry import resolve
    from tunesmith.run import save_model

    tiny = tmp_path / "src"
    from conftest import make_tiny_model

    make_tiny_model("bert", tiny)
    model, tok = AutoModel.from_pretrained(tiny), AutoTokenizer.from_pretrained(resolve("minilm"))
    dest = tmp_path / "out" / "model"
    dest.mkdir(parents=True)
    (dest / "stale.bin").write_text("from an earlier save")
    save_model(model, tok, dest)
    assert (dest / "config.json").exists() and not (dest / "stale.bin").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["model"]
