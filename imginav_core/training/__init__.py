"""Training one experiment: the loop (``loop``), the run's state and checkpoints
(``checkpoints``), the metrics CSV (``metrics_csv``), sample grids (``samples``) and the
progress bar (``progress``)."""

from .loop import train

__all__ = ["train"]
