"""Model folders that tunesmith builds into its cache (mpnet's split zip, smollm2's GGUF), published whole."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def building(folder: Path):
    """Yields a temp folder beside `folder`; on success it is renamed to `folder`, so a crash or an error
    never leaves a folder that looks complete. When another process published first, theirs is kept."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only; the model folder is an ordinary one
    try:
        yield tmp
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
