"""mmtool: experiment toolkit for supervised multi-modal learning (modality laziness, UMT/UME)."""

__version__ = "0.1.0"
