"""--strategy qlora: without CUDA, one line (exit 2) before the data or the model loads; with it, the base's
load settings are 4-bit NF4 with bf16 compute (the CUDA run itself needs a GPU: benchmarks/gpu_check.sh)."""
import pytest
import torch

from tunesmith.errors import TunesmithError
from tunesmith.models import quantize

from conftest import one_line_error, run_cli


def test_qlora_refuses_a_machine_without_cuda_before_the_model_loads(toy_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # a model that does not exist: the refusal must come before it is looked for
    code, _, err = run_cli(["train", toy_csv, "--task", "sft", "--strategy", "qlora", "--model",
                            tmp_path / "no-such-model", "--out", tmp_path / "run"], capsys, monkeypatch)
    assert "--strategy qlora needs a CUDA GPU" in one_line_error(code, err)
    assert not (tmp_path / "run").exists()


def test_qlora_loads_the_base_in_nf4_with_bf16_compute(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")  # --nproc: each process's copy on its own GPU
    kw = quantize.load_kwargs("qlora")
    q = kw["quantization_config"]
    assert q.load_in_4bit and q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_compute_dtype == torch.bfloat16
    assert kw["dtype"] == torch.bfloat16 and kw["device_map"] == {"": 1}
    assert quantize.load_kwargs("lora") == {"dtype": torch.float32}


def test_qlora_refuses_a_task_that_loads_no_4bit_model(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(TunesmithError, match="--task token does not load a 4-bit model"):
        quantize.check("qlora", "token", loads_4bit=False)
