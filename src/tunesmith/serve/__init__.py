"""HTTP serving of a run: FastAPI app (create_app) with server-side micro-batching, run by uvicorn."""
from __future__ import annotations


def serve_run(run_path, host: str = "127.0.0.1", port: int = 8000, **limits) -> None:
    import uvicorn

    from tunesmith.serve.app import Limits, create_app

    app = create_app(run_path, Limits(**limits))
    uvicorn.run(app, host=host, port=port, log_level="info")
