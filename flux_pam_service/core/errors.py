"""How an error reads in a log line or an answer."""


def errtext(exc: BaseException) -> str:
    """The message of *exc* without Python's ``[Errno N]`` decoration."""
    if isinstance(exc, OSError) and type(exc).__str__ is OSError.__str__:
        return exc.strerror or str(exc)
    return str(exc)
