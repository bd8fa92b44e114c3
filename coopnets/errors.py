"""User-facing errors: one line saying what is wrong and how to fix it."""


class UserError(Exception):
    """A mistake in the user's input (path, data, config). The CLI prints it without a traceback."""


class TrainingDiverged(RuntimeError):
    """Energies or losses became NaN/inf; the last good checkpoint is kept."""
