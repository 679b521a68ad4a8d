"""The base of the errors whose one-line message is the whole story."""


class StageError(Exception):
    """Bad input or an impossible result, told in one line: a stage prints it and exits 1."""
