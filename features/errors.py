"""The one error type for bad input: its message names dataset, field, row and symbol."""


class InputError(ValueError):
    """Bad input data. The message names dataset, field, row and symbol."""
