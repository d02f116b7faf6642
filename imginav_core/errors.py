"""The errors that say what to fix. Each message names the file, the line or the key, and what
would be right; the command line prints it as ``error: ...`` (no traceback) and exits with 2.

They live together, away from the code that raises them, so that the command line can catch
them all without importing torch.
"""

from __future__ import annotations


class ImginavError(Exception):
    """Bad input or a run in a state that needs the user: the message says what to do."""


class ConfigError(ImginavError, ValueError):
    """A configuration or notebook parameter that cannot be used; names the file and key."""


class ManifestError(ImginavError, ValueError):
    """A manifest (``layouts.csv``) that cannot be used; names the file and line."""


class LayoutReadError(ImginavError, ValueError):
    """A layout image that cannot be used; names the manifest line and the file."""


class CheckpointError(ImginavError, ValueError):
    """A checkpoint that cannot be used; names the file."""


class ResumeError(ImginavError, ValueError):
    """``last.pt`` belongs to a differently configured run."""


class RunInProgressError(ImginavError, RuntimeError):
    """Another process is training the same experiment into the same run folder."""


class NonFiniteLossError(ImginavError, RuntimeError):
    """Training produced NaN or inf; names the epoch, step and loss terms."""


class UnfinishedRunError(ImginavError, RuntimeError):
    """A run the analysis should not compare as if it were complete (or cannot find at all)."""


class ReportError(ImginavError, RuntimeError):
    """The report cannot be staged: its notebooks or its widget script are missing."""


class ProbeError(ImginavError, RuntimeError):
    """The diffusion probe's results, the decision's primary endpoint, are missing, do not cover
    every compared run, or are older than a run they should measure."""
