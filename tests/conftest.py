"""Shared fixtures: tiny random models of several architectures, real data paths."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

ARCHS = {
    "bert": ("BertConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                max_position_embeddings=128)),
    "roberta": ("RobertaConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=130, pad_token_id=0)),
    "gpt2": ("GPT2Config", dict(n_embd=32, n_layer=2, n_head=2, n_positions=128)),
    "llama": ("LlamaConfig", dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                  intermediate_size=64, max_position_embeddings=128)),
}


def make_tiny_model(arch: str, folder: Path) -> Path:
    """A random model of `arch` with the built-in model's WordPiece tokenizer (30522 tokens)."""
    import torch
    import transformers
    from transformers import AutoModel, AutoTokenizer

    from tunesmith.models.registry import resolve

    if (folder / "config.json").exists():
        return folder
    tok = AutoTokenizer.from_pretrained(resolve("minilm"))
    if arch in ("gpt2", "llama"):
        tok.eos_token = tok.sep_token
        tok.bos_token = tok.cls_token
    cls_name, kw = ARCHS[arch]
    ids = dict(vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id, eos_token_id=tok.sep_token_id,
               bos_token_id=tok.cls_token_id)
    config = getattr(transformers, cls_name)(**{**ids, **kw})
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {a: make_tiny_model(a, root / a) for a in ARCHS}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED.exists(), f"shared data not found at {SHARED}"
    return SHARED


def write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def toy_rows() -> list[dict]:
    """120 short texts, 3 classes, separable by keywords: tiny models can learn it in seconds."""
    words = {"billing": ["invoice", "charge", "refund", "payment"], "shipping": ["parcel", "delivery", "courier", "tracking"],
             "login": ["password", "account", "locked", "signin"]}
    rows = []
    for i in range(40):
        for label, ws in words.items():
            rows.append({"text": f"my {ws[i % 4]} problem number {i} {ws[(i + 1) % 4]}", "label": label})
    return rows


@pytest.fixture
def toy_csv(tmp_path) -> Path:
    return write_csv(tmp_path / "toy.csv", toy_rows())


def declare_mean_pooling(folder: Path) -> Path:
    """Make a model folder declare sentence-transformers mean pooling (as all-MiniLM's does)."""
    import json

    (folder / "modules.json").write_text(json.dumps([{"idx": 1, "name": "1", "path": "1_Pooling",
                                                      "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return folder


@pytest.fixture(scope="session")
def tiny_mean_bert(tiny_models, tmp_path_factory) -> Path:
    """The tiny BERT declaring mean pooling: its classifier reads the mean (models/pooling.py)."""
    import shutil

    folder = tmp_path_factory.mktemp("bert_mean") / "m"
    shutil.copytree(tiny_models["bert"], folder)
    return declare_mean_pooling(folder)


@pytest.fixture(scope="session")
def tiny_run(tiny_models, tmp_path_factory):
    """One finished classifier run (tiny BERT, toy data, 1 epoch) shared by merge/export/serve tests.
    Tests must not modify it: copy it first."""
    import tunesmith

    root = tmp_path_factory.mktemp("tiny_run")
    data = write_csv(root / "toy.csv", toy_rows())
    # head_init random: a probe fitted on a random tiny model's nearly constant features has weights of
    # ~1/spread, and an epoch at lr 1e-3 then moves those features far enough to give logits in the
    # hundreds; the tests sharing this run check plumbing (temperature, parity tolerance) on O(1) logits.
    return tunesmith.train(str(data), model=str(tiny_models["bert"]), epochs=1, lr=1e-3, batch_size=16, seed=0,
                           out=str(root / "run"), audit=False, baselines=False, head_init="random")


class StopAfter:
    """Acts like Ctrl-C arriving during step `batch` of epoch `epoch` (0-based): pass it as `stop=` and its
    `on_event` as the event hook of a training call."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch, self.requested = epoch, batch, False

    def __enter__(self):
        return self

    def __exit__(self, *a):
        pass

    def on_event(self, kind, **kw):
        if kind == "step" and kw["epoch"] == self.epoch and kw["batch"] == self.batch:
            self.requested = True


def run_cli(args, capsys, monkeypatch) -> tuple[int, str, str]:
    """`tunesmith ARGS` in this process: (exit code, stdout, stderr)."""
    import sys

    from tunesmith import cli

    monkeypatch.setattr(sys, "argv", ["tunesmith", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


def one_line_error(code, err) -> str:
    """The single `error:` line of a refused command (exit 2, no traceback)."""
    assert code == 2, err
    assert "Traceback" not in err
    errors = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def no_dropout_copy(src, dest: Path, **zeros) -> Path:
    """A copy of a model folder with its dropout settings at 0 (`zeros`): each process of a DDP run draws
    its own dropout masks, so runs compared across process counts must have none."""
    import shutil

    shutil.copytree(src, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg.update({k: 0.0 for k in zeros})
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def assert_trained_alike(one: Path, two: Path, val_loss: bool = True) -> None:
    """Two run folders trained alike (DDP against one process): each epoch's losses to rel 1e-4 and the
    saved weights to rtol 1e-4."""
    import torch
    from safetensors.torch import load_file

    h1 = json.loads((one / "metrics.json").read_text())["history"]
    h2 = json.loads((two / "metrics.json").read_text())["history"]
    assert len(h1) == len(h2)
    for a, b in zip(h1, h2):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4, abs=1e-6)
        if val_loss:
            assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4, abs=1e-6)
    w1, w2 = load_file(one / "model" / "model.safetensors"), load_file(two / "model" / "model.safetensors")
    assert w1.keys() == w2.keys()
    for n in w1:
        torch.testing.assert_close(w2[n], w1[n], rtol=1e-4, atol=2e-5)
