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


def test_best_and_last_are_written_in_the_same_epoch(tiny_models, safety_data, tmp_path, monkeypatch):  # noqa: F811
    """last.pt is not written every epoch, but always with a new best.pt: a run killed outright resumes with the
    best epoch its best.pt holds, never a later one's weights under an earlier best_epoch."""
    import tunesmith
    from tunesmith.tasks.classification.steps import ClassifierSteps
    from tunesmith.train import loop

    from safety_runs import QUICK

    monkeypatch.setattr(ClassifierSteps, "chooses", lambda self, on_event: True)  # validation picks the epoch
    writes, epoch = [], [0]
    real_best, real_last = loop.atomic_save, loop.save_resume
    monkeypatch.setattr(loop, "atomic_save",
                        lambda obj, path: (writes.append(("best", epoch[0])), real_best(obj, path)))
    monkeypatch.setattr(loop, "save_resume", lambda path, *a: (writes.append(("last", epoch[0])), real_last(path, *a)))

    def on_event(kind, **kw):
        if kind == "epoch_end":
            epoch[0] += 1

    tunesmith.train(str(safety_data), model=str(tiny_models["bert"]), out=str(tmp_path / "run"), on_event=on_event,
                    **{**QUICK, "epochs": 4, "patience": 0, "val_fraction": 0.3})
    best = [e for k, e in writes if k == "best"]
    assert best, writes  # the first epoch is always a new best
    assert sorted(set(best)) == sorted({e for k, e in writes if k == "last"}), writes
