"""Errors a user can act on: each message names the file and the problem."""


class Dig2DigError(Exception):
    """Base class: the CLI prints these as one line and exits non-zero."""


class InputError(Dig2DigError):
    """A source image (or other input file) is missing, unreadable or unsuitable."""


class ModelError(Dig2DigError):
    """A model file is missing, corrupt, or lacks the metadata dig2dig needs."""


class NumericalError(Dig2DigError):
    """The model or the guidance produced NaN or Inf."""
