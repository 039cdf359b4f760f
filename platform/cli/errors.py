"""The one error type commands raise for bad input: printed as one line, exit status 2."""


class CliError(Exception):
    pass
