"""memgen: neuron-level differentiation of memorization and generalization in language models."""

__version__ = "0.1.0"
