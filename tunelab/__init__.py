"""tunelab: train and fine-tune small models on one machine."""

__version__ = "0.1.0"
