"""`python -m tunesmith.train.torchrun ARGS`: torch.distributed.run, ending with the processes' exit code.

A process that stops on a TunesmithError has printed its one line and exits 2; torch.distributed.run would
add its own traceback and failure table below it and exit 1."""
from __future__ import annotations

import logging
import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import parse_args, run


def main(argv: list[str]) -> int:
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the failure is said by the process
    try:
        run(parse_args(argv))
    except ChildFailedError as e:
        code = e.get_first_failure()[1].exitcode
        return code if code > 0 else 1  # a signal's negative code: failed
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
