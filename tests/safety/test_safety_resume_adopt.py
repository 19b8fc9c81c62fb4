"""--resume keeps the run's own resolved and older settings instead of deciding them again."""
import yaml

from tunesmith.config import make_recipe
from tunesmith.run import check_resume, fingerprints


def _run(tmp_path, recorded: dict):
    data = tmp_path / "d.csv"
    data.write_text("text,label\na,x\nb,y\n")
    out = tmp_path / "run"
    out.mkdir()
    rec = make_recipe(train=str(data))
    doc = {"recipe": {**rec.model_dump(mode="json"), **recorded},
           "provenance": {"data": fingerprints(rec)}}
    (out / "recipe.yaml").write_text(yaml.safe_dump(doc))
    return data, out


def test_resume_without_lr_takes_the_runs_resolved_lr(tmp_path):
    data, out = _run(tmp_path, {"lr": 3e-5, "max_length": 64, "pooling": "auto", "head_init": "probe"})
    got = check_resume(out, make_recipe(train=str(data)))
    assert got.lr == 3e-5 and got.max_length == 64


def test_a_run_recorded_before_pooling_resumes_as_it_trained(tmp_path):
    data, out = _run(tmp_path, {"lr": 5e-5})
    with open(out / "recipe.yaml") as f:
        doc = yaml.safe_load(f)
    for k in ("pooling", "head_init"):
        doc["recipe"].pop(k)
    (out / "recipe.yaml").write_text(yaml.safe_dump(doc))
    got = check_resume(out, make_recipe(train=str(data)))
    assert (got.pooling, got.head_init) == ("native", "random")
    import pytest

    from tunesmith.errors import TunesmithError

    with pytest.raises(TunesmithError, match="pooling auto"):  # asking for the new pooling is a mismatch
        check_resume(out, make_recipe(train=str(data), pooling="auto"))


def test_resume_keeps_the_contrastive_stage_the_run_recorded(tmp_path):
    """A run started when `auto` resolved the stage on (its last.pt holds the body the stage trained) resumes
    with it on, whatever `auto` decides today; asking for another value explicitly is a mismatch."""
    import pytest

    from tunesmith.errors import TunesmithError

    data, out = _run(tmp_path, {"contrastive": "on"})
    assert check_resume(out, make_recipe(train=str(data))).contrastive == "on"
    with pytest.raises(TunesmithError, match="contrastive"):
        check_resume(out, make_recipe(train=str(data), contrastive="off"))
