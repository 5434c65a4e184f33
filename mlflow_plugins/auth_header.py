"""Request header provider: `Authorization: Bearer <token>` for a tracking server behind a gateway.

The token comes from `LAYERPILOT_MLFLOW_TOKEN`, or from the file named by
`LAYERPILOT_MLFLOW_TOKEN_FILE` (a mounted Secret or a projected service-account token), which is
re-read on every request so that a rotated token is picked up without restarting the Job. Without
either variable the provider adds nothing. MLflow's own `MLFLOW_TRACKING_TOKEN` or
`MLFLOW_TRACKING_USERNAME`/`_PASSWORD`, when set, replace this header: MLflow writes those last.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider

TOKEN_ENV = "LAYERPILOT_MLFLOW_TOKEN"
TOKEN_FILE_ENV = "LAYERPILOT_MLFLOW_TOKEN_FILE"


class BearerTokenHeaderProvider(RequestHeaderProvider):
    def in_context(self) -> bool:
        return bool(os.environ.get(TOKEN_ENV) or os.environ.get(TOKEN_FILE_ENV))

    def request_headers(self) -> dict[str, str]:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token and os.environ.get(TOKEN_FILE_ENV):
            try:
                token = Path(os.environ[TOKEN_FILE_ENV]).read_text().strip()
            except OSError:
                token = ""  # a missing mount shows up as the server's 401, not as a crash here
        return {"Authorization": f"Bearer {token}"} if token else {}
