"""Finding 11 (checkpoint part) of issue #20: a finished run drops its big resume files unless asked to keep them."""
from safety_runs import finished_run, safety_data  # noqa: F401


def test_a_finished_run_drops_last_and_best_and_says_so(finished_run):
    run, events = finished_run
    ck = run.path / "checkpoint"
    assert not (ck / "last.pt").exists() and not (ck / "best.pt").exists()
    assert any("--keep-checkpoints" in m for m in events), events
    assert (ck / "test_logits.npy").exists()  # small, measured after training: kept


# --keep-checkpoints (the CLI flag) is checked by test_safety_overwrite.py::test_overwrite_of_a_run_folder_end_to_end.
