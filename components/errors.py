"""The one base class for problems a user can fix: bad data, bad params, an unknown model
version. The CLI prints them as one clear line (exit status 2) instead of a traceback, and
catches them without importing the heavy modules that raise them."""


class UserError(Exception):
    """Raised for input the user can correct; anything else is a bug and keeps its traceback."""
