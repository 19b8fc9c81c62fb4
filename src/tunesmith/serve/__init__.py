"""HTTP serving of a run: FastAPI app (create_app) with server-side micro-batching, run by uvicorn."""
from __future__ import annotations


import sys


def serve_run(run_path, host: str = "127.0.0.1", port: int = 8000, *, token_file=None, allow_hosts=(),
              info_details: bool = False, task_options: dict | None = None, **limits) -> None:
    """Serve until stopped. The bearer token comes from `token_file`, else $TUNESMITH_SERVE_TOKEN; without
    one, binding beyond loopback prints a warning. Bad settings raise TunesmithError before the model loads."""
    import uvicorn

    from tunesmith.errors import TunesmithError
    from tunesmith.serve.app import Limits, create_app
    from tunesmith.serve.security import HostCheck, bind_warnings, read_token

    if not 1 <= port <= 65535:  # uvicorn would end in an OverflowError traceback
        raise TunesmithError(f"--port {port} is out of range: use a port from 1 to 65535")
    limits = Limits(**limits)
    token, warnings = read_token(token_file)
    for line in warnings + bind_warnings(host, token):
        print(f"warning: {line}", file=sys.stderr)
    app = create_app(run_path, limits, token=token, allow_hosts=HostCheck(host, allow_hosts),
                     info_details=info_details, task_options=task_options)
    uvicorn.run(app, host=host, port=port, log_level="info")
