import numpy as np

from tunesmith.evaluate.calibration import calibrate, ece, fit_temperature
from tunesmith.tasks import get_task

TASK = get_task("single_label", [str(i) for i in range(5)])


def overconfident(n, seed):
    """Logits whose softmax says ~99% while the argmax is right ~70% of the time."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    pred = np.where(rng.random(n) < 0.7, y, rng.integers(0, 5, n))
    logits = rng.normal(0, 1, (n, 5))
    logits[np.arange(n), pred] += 3.0
    return logits * 4.0, y


def test_temperature_scaling_lowers_ece_of_overconfident_model():
    val_logits, y_val = overconfident(2000, 0)
    test_logits, y_test = overconfident(2000, 1)
    cal = calibrate(TASK, val_logits, y_val, test_logits, y_test)
    assert cal["temperature"] > 1.5
    assert cal["ece_after"] < 0.5 * cal["ece_before"]
    assert cal["test_ece_after"] < cal["test_ece_before"]
    # ranking is unchanged, so accuracy is too
    p0, p1 = TASK.probabilities(test_logits), TASK.probabilities(test_logits, cal["temperature"])
    assert (p0.argmax(1) == p1.argmax(1)).all()


def test_well_calibrated_model_keeps_temperature_near_one():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 2, (4000, 5))
    p = TASK.probabilities(logits)
    y = np.array([rng.choice(5, p=row) for row in p])  # labels drawn from the model's own probabilities
    assert abs(fit_temperature(TASK, logits, y) - 1.0) < 0.1
    assert ece(TASK, p, y) < 0.03


def test_multilabel_temperature():
    task = get_task("multilabel", ["a", "b", "c"])
    rng = np.random.default_rng(3)
    y = (rng.random((1500, 3)) > 0.5).astype(float)
    logits = np.where(rng.random((1500, 3)) < 0.8, 2 * y - 1, 1 - 2 * y) * 6.0
    cal = calibrate(task, logits[:1000], y[:1000], logits[1000:], y[1000:])
    assert cal["temperature"] > 1.5 and cal["ece_after"] < cal["ece_before"]
