"""Errors the command line reports in one line. Imports nothing, so any layer may raise them."""


class ConfigError(ValueError):
    """A bad config key, type or value; the message is one line naming the culprit."""


class NonFiniteLossError(RuntimeError):
    """Training produced NaN or Inf: stop with a clear message instead of training on garbage."""


__all__ = ["ConfigError", "NonFiniteLossError"]
