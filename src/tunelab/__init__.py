"""tunelab: fine-tuning projects for language models, run as MLOps."""

__version__ = "0.1.0"
