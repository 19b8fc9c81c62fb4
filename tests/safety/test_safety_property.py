"""Property (issue #20): whatever a folder holds and whatever the flags, preparing --out never removes or changes
a file that is not the run's own, and a refusal changes nothing at all."""
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from safety_runs import finished_run, one_line_error, run_cli, safety_data, snapshot  # noqa: F401

from tunesmith import run as runmod
from tunesmith.errors import TunesmithError

RUN_NAMES = ["model", "adapter", "recipe.yaml", "metrics.json", "audit.json", "report.html", "MODEL_CARD.md",
             "checkpoint", "sweep.csv", "export"]
USER_NAMES = ["train.csv", "recipe.yaml", "notes", "model", "metrics.json", "thesis.tex", ".git", "checkpoint",
              "report.html", runmod.MARKER]
FAKE_MARKERS = ["", "not json", "{}", '{"files": ["notes"]}', '["model"]', '{"run_id": 3, "files": "model"}']

user_entry = st.tuples(st.sampled_from(USER_NAMES), st.sampled_from(["file", "dir", "nested"]),
                       st.binary(max_size=16))
case = st.fixed_dictionaries({
    "is_run": st.booleans(),
    "run_files": st.sets(st.sampled_from(RUN_NAMES)),
    "users": st.lists(user_entry, max_size=4, unique_by=lambda u: u[0]),
    "fake_marker": st.none() | st.sampled_from(FAKE_MARKERS),
    "out_is_parent": st.booleans(),
    "overwrite": st.booleans(),
    "resume": st.booleans(),
    "inputs_inside": st.lists(st.integers(0, 3), max_size=2),
    "config_inside": st.booleans(),
})


def _make(kind: str, path: Path, data: bytes):
    if kind == "file":
        path.write_bytes(data)
    else:
        (path / "deep" if kind == "nested" else path).mkdir(parents=True)
        (path / ("deep/x.bin" if kind == "nested" else "x.bin")).write_bytes(data)


def _build(root: Path, c: dict):
    parent = root / "parent"
    folder = parent / "folder"
    folder.mkdir(parents=True)
    (root / "outside.txt").write_text("outside")
    (parent / "beside.txt").write_text("beside")
    own = set()
    if c["is_run"]:
        runmod.prepare_out(folder, overwrite=False, resume=False)  # a real, empty run folder with its marker
        for name in sorted(c["run_files"]):
            _make("nested" if "." not in name else "file", runmod.artifact(folder, name), b"run output")
        own = set(c["run_files"]) | {runmod.MARKER}
    elif c["fake_marker"] is not None:
        (folder / runmod.MARKER).write_text(c["fake_marker"])
    users = [u for u in c["users"] if u[0] not in own and u[0] not in {p.name for p in folder.iterdir()}]
    for name, kind, data in users:
        _make(kind, folder / name, data)
    inputs = [root / "outside.txt"]
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).parts[0] not in own)
    for i in c["inputs_inside"]:
        if files:
            inputs.append(files[i % len(files)])
    if c["config_inside"]:
        cfg = folder / "sub" / "my-recipe.yaml"
        if "sub" not in own:
            cfg.parent.mkdir(exist_ok=True)
            cfg.write_text("recipe: {epochs: 1}\n")
            inputs.append(cfg)
    return parent, folder, own, inputs


@settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(case)
def test_preparing_out_never_touches_what_is_not_the_runs(c):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        parent, folder, own, inputs = _build(root, c)
        out = parent if c["out_is_parent"] else folder
        before = snapshot(root)
        try:
            runmod.prepare_out(out, overwrite=c["overwrite"], resume=c["resume"], inputs=inputs)
            refused = False
        except TunesmithError as e:
            refused = True
            assert "\n" not in str(e)
        after = snapshot(root)
        if refused:
            assert after == before
            return
        may_go = set() if c["resume"] or out != folder else {f"parent/folder/{n}" for n in own}
        for path, digest in before.items():
            if not any(path == g or path.startswith(g + "/") for g in may_go):
                assert after.get(path) == digest, f"{path} was removed or changed: {c}"
        if c["overwrite"] and not c["resume"] and out == folder and before.keys() - after.keys():
            # something was deleted: then the folder must have held nothing but the run's own files
            assert c["is_run"]
            assert all(p.split("/")[2] in own for p in before if p.startswith("parent/folder/"))


def test_cli_overwrite_of_the_folder_above_a_run_changes_nothing(finished_run, safety_data, tmp_path, capsys,
                                                                 monkeypatch):
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(finished_run[0].path, runs / "x")
    (runs / "notes.md").write_text("which run was best")
    before = snapshot(tmp_path)
    code, _, err = run_cli(["train", safety_data, "--out", runs, "--overwrite"], capsys, monkeypatch)
    assert "not a tunesmith run folder" in one_line_error(code, err)
    assert snapshot(tmp_path) == before
