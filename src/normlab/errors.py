"""Errors that are the user's to fix, reported as one sentence without a traceback."""


class UserError(Exception):
    """A problem with the user's input, reported as one sentence without a traceback."""


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
