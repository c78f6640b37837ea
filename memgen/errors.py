"""Errors the command line reports in one line; kept free of heavy imports so it loads fast."""

from memgen.config import ConfigError


class NonFiniteLossError(RuntimeError):
    """Training produced NaN or Inf: stop with a clear message instead of training on garbage."""


__all__ = ["ConfigError", "NonFiniteLossError"]
