"""Run folders side by side: `tunesmith runs` (a table of the runs under a folder) and `tunesmith compare`
(is run B really better than run A on the same test rows: a paired bootstrap, recipe differences, per-class
and per-slice deltas, compare.html).

Everything here reads run folders (run.py's marker, recipe.yaml, metrics.json, checkpoint/*.npy) and
executes nothing of them: YAML through safe_load, arrays through np.load without pickles."""
from tunesmith.compare.page import write_compare
from tunesmith.compare.pairwise import compare_runs, default_out
from tunesmith.compare.runs import COLUMNS, find_runs, list_runs, summarize

__all__ = ["COLUMNS", "compare_runs", "default_out", "find_runs", "list_runs", "summarize", "write_compare"]
