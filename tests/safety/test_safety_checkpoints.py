"""Finding 11 (checkpoint part) of issue #20: a finished run drops its big resume files unless asked to keep them."""
from safety_runs import finished_run, safety_data  # noqa: F401


def test_a_finished_run_drops_last_and_best_and_says_so(tiny_models, safety_data, tmp_path, monkeypatch):  # noqa: F811
    import tunesmith
    from tunesmith.train import loop

    from safety_runs import QUICK

    monkeypatch.setattr(loop, "CHECKPOINT_EVERY_S", 0.0)  # last.pt at every epoch's end, as a long run writes it
    events = []
    run = tunesmith.train(str(safety_data), model=str(tiny_models["bert"]), out=str(tmp_path / "run"),
                          on_event=lambda kind, **kw: events.append(kw.get("message", kind)), **QUICK)
    ck = run.path / "checkpoint"
    assert not (ck / "last.pt").exists() and not (ck / "best.pt").exists()
    assert any("--keep-checkpoints" in m and "last.pt" in m for m in events), events
    assert (ck / "test_logits.npy").exists()  # small, measured after training: kept


def test_a_short_run_writes_no_resume_state_it_would_delete(finished_run):  # noqa: F811
    """last.pt is written once CHECKPOINT_EVERY_S has passed (or at Ctrl-C): a run of a few seconds never pays
    for the 12 bytes a parameter it would delete at the end."""
    run, events = finished_run
    ck = run.path / "checkpoint"
    assert not (ck / "last.pt").exists()
    assert not any("--keep-checkpoints" in m for m in events), events


# --keep-checkpoints (the CLI flag) is checked by test_safety_overwrite.py::test_overwrite_of_a_run_folder_end_to_end.
