"""Several machines: two "nodes" on localhost (--nnodes 2 --nproc 1, node ranks 0 and 1, one rendezvous port)
train one model, node 0 writes the run folder, and it is the model one process trains."""
import json
import socket
import subprocess
import sys

import tunesmith

from conftest import assert_trained_alike, no_dropout_copy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_match_one_process(tiny_models, toy_csv, tmp_path, monkeypatch):
    model = no_dropout_copy(tiny_models["bert"], tmp_path / "bert", hidden_dropout_prob=0,
                            attention_probs_dropout_prob=0, classifier_dropout=0)
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    one = tunesmith.train(str(toy_csv), model=str(model), epochs=2, lr=1e-3, batch_size=15, bf16="off", seed=3, contrastive="off",
                          out=str(tmp_path / "one"))
    port = str(_free_port())
    args = ["train", str(toy_csv), "--model", str(model), "--epochs", "2", "--lr", "1e-3", "--batch-size", "15",
            "--bf16", "off", "--seed", "3", "--contrastive", "off", "--out", str(tmp_path / "two"), "--nnodes", "2", "--nproc", "1",
            "--master-addr", "127.0.0.1", "--master-port", port]
    nodes = [subprocess.Popen([sys.executable, "-m", "tunesmith.cli", *args, "--node-rank", str(r)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=300)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert "run folder" in outs[0] and "run folder" not in outs[1]  # node 0's rank 0 reports
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert_trained_alike(tmp_path / "one", tmp_path / "two", val_loss=False)


def test_nnodes_needs_the_rendezvous_address(toy_csv, capsys, monkeypatch):
    from conftest import one_line_error, run_cli

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    code, _, err = run_cli(["train", toy_csv, "--nnodes", "2"], capsys, monkeypatch)
    assert "--master-addr" in one_line_error(code, err)
