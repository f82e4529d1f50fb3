"""bssl: binary self-supervised networks from pretraining to the edge."""

__version__ = "0.1.0"
