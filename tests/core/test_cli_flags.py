"""`tunesmith train`'s flags come from the Recipe's one list (config.setting, cli.recipe_options): every field
but `train` (the DATA argument) is a flag, grouped in --help by its section, and a flag given reaches the
recipe (paths as str; a flag not given leaves a --config file's value alone)."""
import re
import sys
from types import SimpleNamespace

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from tunesmith import api, cli
from tunesmith.config import SECTIONS, Recipe, section_of
from tunesmith.tasks import REGISTRY

# The flags `tunesmith train` had before they were built from the Recipe: none may go or be renamed.
FLAGS_BEFORE = """--test --model --strategy --task --text-column --label-column --epochs --lr --batch-size --grad-accum
--max-length --warmup-ratio --weight-decay --label-smoothing --scheduler --seed --patience --val-fraction --bf16
--lora-r --lora-alpha --head-init --pooling --slice-column --retention-data --strict --prompt-column
--response-column --train-on-prompt --overflow --packing --gradient-checkpointing --max-new-tokens
--eval-generations --few-shot-k --out --overwrite --resume --keep-checkpoints --config --nproc --engine""".split()
SWITCHES = ["--strict", "--train-on-prompt", "--packing", "--gradient-checkpointing", "--keep-checkpoints",
            "--overwrite", "--resume"]
FIELDS = [n for n in Recipe.model_fields if n != "train"]


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@pytest.fixture(scope="module")
def params():
    return {p.name: p for p in typer.main.get_command(cli.app).commands["train"].params}


def test_every_recipe_field_but_train_is_a_flag_with_section_and_help(params):
    for name in FIELDS:
        p = params.get(name)
        assert p is not None and p.opts == [flag(name)], name
        assert p.default is None and not p.required, name  # unset: the --config file's value stands
        want = cli.DYNAMIC_HELP[name]() if name in cli.DYNAMIC_HELP else Recipe.model_fields[name].description
        assert p.help == want and p.help and p.rich_help_panel == SECTIONS[section_of(name)], name
        if Recipe.model_fields[name].annotation is bool:
            assert p.is_flag and p.secondary_opts == ["--no-" + flag(name)[2:]], name
    assert "train" not in params and params["data"].param_type_name == "argument"
    for name in ("config", "overwrite", "resume", "nproc", "engine"):  # the command's own, in no section
        assert name not in Recipe.model_fields and params[name].rich_help_panel is None


def test_no_flag_of_before_is_lost_or_changed(params):
    opts = {o: p for p in params.values() for o in p.opts}
    assert [f for f in FLAGS_BEFORE if f not in opts] == []
    for f in SWITCHES:
        assert opts[f].is_flag and opts[f].secondary_opts == ["--no-" + f[2:]], f
    assert params["nproc"].default == 1 and params["nproc"].min == 1


def test_help_groups_the_flags_by_section():
    r = CliRunner().invoke(cli.app, ["train", "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert r.exit_code == 0, r.output
    text = r.output
    starts = [text.index(f"─ {title} ─") for title in SECTIONS.values()]
    assert starts == sorted(starts), "panels in SECTIONS order"
    bounds = dict(zip(SECTIONS, zip(starts, starts[1:] + [len(text)])))
    for name in FIELDS:
        lo, hi = bounds[section_of(name)]
        assert re.search(re.escape(flag(name)) + r"\b(?!-)", text[lo:hi]), f"{flag(name)} not in its panel"
    assert "auto | " + " | ".join(REGISTRY) in text  # --task lists the registered tasks


def fake_train(monkeypatch, seen: dict, resolve: bool = False):
    def train(train_path, *, config=None, resume=False, overwrite=False, on_event=None, **settings):
        seen.update(train_path=train_path, config=config, resume=resume, overwrite=overwrite, settings=settings)
        if resolve:  # the recipe these would give, without training
            from tunesmith.pipeline import resolve_recipe

            seen["recipe"] = resolve_recipe(train_path, config, resume, settings)
        return SimpleNamespace(metrics={}, path=None)  # no metrics: nothing printed (as on rank > 0)

    monkeypatch.setattr(api, "train", train)


def test_flags_given_reach_api_train_and_only_those(tmp_path, monkeypatch):
    seen = {}
    fake_train(monkeypatch, seen)
    args = ["train", str(tmp_path / "d.csv"), "--lora-r", "4", "--packing", "--no-audit", "--lr", "1e-4",
            "--lora-target-modules", "query", "--lora-target-modules", "value", "--test", str(tmp_path / "t.csv"),
            "--out", str(tmp_path / "run"), "--scheduler", "cosine", "--overwrite", "--retention-data", "sts.csv"]
    r = CliRunner().invoke(cli.app, args)
    assert r.exit_code == 0, r.output
    assert seen == {"train_path": str(tmp_path / "d.csv"), "config": None, "resume": False, "overwrite": True,
                    "settings": {"lora_r": 4, "packing": True, "audit": False, "lr": 1e-4,
                                 "lora_target_modules": ["query", "value"], "test": str(tmp_path / "t.csv"),
                                 "out": str(tmp_path / "run"), "scheduler": "cosine", "retention_data": "sts.csv"}}
    assert all(type(seen["settings"][k]) is str for k in ("test", "out", "retention_data"))  # paths, as str


def test_flags_override_a_config_file_and_unset_ones_leave_it(tmp_path, monkeypatch):
    seen = {}
    fake_train(monkeypatch, seen, resolve=True)
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text(yaml.safe_dump({"recipe": {"train": "d.csv", "epochs": 3, "lora_r": 16, "packing": True,
                                              "strict": True, "grad_clip": 0.5}}))
    r = CliRunner().invoke(cli.app, ["train", "--config", str(cfg), "--lora-r", "4", "--no-packing", "--metric",
                                     "accuracy"])
    assert r.exit_code == 0, r.output
    rec = seen["recipe"]
    assert seen["config"] == str(cfg) and seen["train_path"] is None
    assert (rec.lora_r, rec.packing, rec.metric) == (4, False, "accuracy")  # given: the flag wins
    assert (rec.epochs, rec.strict, rec.grad_clip, rec.train) == (3, True, 0.5, "d.csv")  # not given: the file's


@pytest.mark.parametrize("args, field", [(["--lora-r", "0"], "lora_r"), (["--scheduler", "steep"], "scheduler"),
                                         (["--test-fraction", "0.95"], "test_fraction")])
def test_bad_flag_value_is_one_line_naming_the_field(args, field, toy_csv, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["tunesmith", "train", str(toy_csv), *args, "--out", str(tmp_path / "r")])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"invalid settings: {field}:" in errors[0], err
    assert not (tmp_path / "r").exists()


def test_a_non_number_is_refused_by_the_parser(toy_csv, tmp_path):
    r = CliRunner().invoke(cli.app, ["train", str(toy_csv), "--epochs", "many", "--out", str(tmp_path / "r")])
    assert r.exit_code == 2 and "--epochs" in r.output and not (tmp_path / "r").exists()


def test_the_last_lines_say_where_the_time_went(capsys):
    """`time:` lists the stages of metrics.json's stage_seconds over 0.1 s, in the order they ran."""
    cli._print_stage_times({"stage_seconds": {"audit": 1.31, "load": 0.04, "before_fit": 0.8, "fit": 10.62}})
    assert capsys.readouterr().out.strip() == "time: audit 1.3s · before fit 0.8s · fit 10.6s"
    cli._print_stage_times({"stage_seconds": {"fit": 0.5, "measure": 0.3}, "resumed": True})
    assert capsys.readouterr().out.strip() == "time (since the resume): fit 0.5s · measure 0.3s"
    cli._print_stage_times({})  # a run from before stage times: no line
    assert capsys.readouterr().out == ""
