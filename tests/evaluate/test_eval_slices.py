import numpy as np
import pandas as pd
import pytest

from tunesmith.errors import TunesmithError
from tunesmith.evaluate.slices import per_slice, slice_values
from tunesmith.tasks import get_task

TASK = get_task("single_label", ["a", "b"])


def test_slice_column_gives_metrics_per_slice_and_gap():
    frame = pd.DataFrame({"text": ["t"] * 8, "region": ["eu"] * 4 + ["us"] * 4})
    y = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    p = np.array([0, 1, 0, 1, 1, 1, 0, 0])   # eu all right, us half right
    res = per_slice(TASK, y, p, slice_values(frame, "region", "test.csv"))
    assert set(res["slices"]) == {"eu", "us"}
    assert res["slices"]["eu"]["accuracy"] == 1.0 and res["slices"]["us"]["accuracy"] == 0.5
    assert res["slices"]["us"]["n"] == 4 and "ci95" in res["slices"]["us"]
    assert res["best"] == "eu" and res["worst"] == "us" and res["gap"] > 0.4


def test_missing_slice_column_names_file_and_columns():
    with pytest.raises(TunesmithError, match="test.csv: no column 'regoin'.*text, region"):
        slice_values(pd.DataFrame({"text": ["x"], "region": ["eu"]}), "regoin", "test.csv")
