"""A worker process of `tunesmith tune --workers N`: `python -m tunesmith.tune.worker OUT/tune_args.json`."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from rich.console import Console

from tunesmith.errors import TunesmithError
from tunesmith.train.loop import Interrupted


def main(path: str) -> int:
    from tunesmith.tune.search import STORAGE_ENV, TuneArgs, work

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = TuneArgs.model_validate_json(Path(path).read_text())
    if args.storage:  # the file holds the URL redacted; the parent passed the real one in the environment
        args = args.model_copy(update={"storage": os.environ.get(STORAGE_ENV, args.storage)})
    try:
        # On a terminal the parent draws the live table; per-trial lines would tear it.
        work(args, None if sys.stderr.isatty() else Console(stderr=True))
    except (Interrupted, KeyboardInterrupt):
        return 130
    except TunesmithError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:
        from tunesmith.tune.study import storage_error

        err = storage_error(e, args.storage)  # its text may quote the URL: one scrubbed line instead
        if err is None:
            raise
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
