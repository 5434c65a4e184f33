"""Library chatter off by default: a command's output is layerpilot's own lines.

transformers, datasets, huggingface_hub and MLflow print INFO lines, deprecation notices and
progress bars of their own, which would bury ours. They read most of their settings from the
environment when they are imported, so `quiet_libraries` runs before any of them is (the commands
import them lazily) and sets the variables for worker processes too. `--verbose` (or
`LAYERPILOT_VERBOSE=1`) leaves everything as the libraries would have it.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

VERBOSE_ENV = "LAYERPILOT_VERBOSE"

QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "DATASETS_VERBOSITY": "error",
    "MLFLOW_LOGGING_LEVEL": "WARNING",  # read when mlflow is imported: "Creating initial ... tables"
    "TOKENIZERS_PARALLELISM": "false",  # else: a warning when a worker process starts
    "TQDM_DISABLE": "1",  # bars libraries draw with tqdm itself (transformers' GGUF conversion)
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning,ignore::UserWarning",
}

QUIET_LOGGERS = ("mlflow", "alembic", "transformers", "datasets", "huggingface_hub", "urllib3", "httpx")


def verbose_from_env() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def quiet_libraries(*, verbose: bool) -> None:
    """Silence library output unless `verbose`; settings the user made in the environment win."""
    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # worker processes inherit the choice
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    _quiet_already_imported()


def _quiet_already_imported() -> None:
    """Libraries imported before us (by a host program or a test) read their settings already."""
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging  # imported already: costs nothing

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
        sys.modules["datasets"].logging.set_verbosity_error()
