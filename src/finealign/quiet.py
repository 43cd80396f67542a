"""Keeping the libraries' own output in its place.

* ``quiet_library_output()``: around a model load, no "Loading weights" bars, no deprecation or
  future warnings and only errors from transformers' logger (finealign prints its own status line).
* ``no_library_progress()``: under finealign's ``--quiet``, no progress bars from transformers,
  huggingface_hub, datasets or anything else drawn with tqdm (TRL's trainers) either.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager

__all__ = ["no_library_progress", "quiet_library_output"]


@contextmanager
def quiet_library_output():
    """Silence progress bars, deprecation/future warnings and non-error transformers logs inside."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    level = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


@contextmanager
def no_library_progress():
    """Hide the progress bars the libraries draw themselves while inside; restore them after."""
    from transformers.utils import logging as hf_logging

    saved_env = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # tqdm >= 4.66 reads it for every bar's default (TRL's trainers)
    hf_bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    hub = _toggle("huggingface_hub.utils", "are_progress_bars_disabled", "disable_progress_bars", "enable_progress_bars")
    ds = _toggle("datasets.utils.logging", "is_progress_bar_enabled", "disable_progress_bar", "enable_progress_bar",
                 enabled_when_true=True)
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = saved_env
        if hf_bars:
            hf_logging.enable_progress_bar()
        for restore in (hub, ds):
            restore()


def _toggle(module: str, probe: str, disable: str, enable: str, *, enabled_when_true: bool = False):
    """Disable one library's bars; return the function that restores the previous state."""
    import importlib

    try:
        mod = importlib.import_module(module)
        was_enabled = bool(getattr(mod, probe)()) == enabled_when_true
        getattr(mod, disable)()
    except (ImportError, AttributeError):
        return lambda: None
    return getattr(mod, enable) if was_enabled else (lambda: None)
