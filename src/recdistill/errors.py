"""The errors a user can cause and mend: a bad value in params.yaml, a damaged archive,
checkpoint or neighbor pickle, a malformed metrics file, a diverged loss. Each message names the file, key or
value. A stage run through :func:`recdistill.cli.run` prints such an error as one line
(``recdistill.params.ParamsError: params.yaml: ...``) and exits 1, without a traceback."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(Exception):
    """Base of the errors whose message alone tells the user what to mend."""
