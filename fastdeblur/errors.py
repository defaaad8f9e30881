"""The two error kinds users catch: bad input and bad or missing weights.

Both subclass the builtin a caller would expect (ValueError, RuntimeError), so existing
`except ValueError` code keeps working; messages name the argument or file and what to do.
"""


class InputError(ValueError):
    """An image, tensor, path or option that fastdeblur cannot use as given."""


class WeightsError(RuntimeError):
    """Weights that are missing, fail their sha256 check, or do not load into the model."""


_YES, _NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_flag(name: str, default: bool) -> bool:
    """The environment variable `name` as a switch: 1/true/yes/on or 0/false/no/off (any case);
    unset or empty gives `default`; anything else is an InputError naming the variable."""
    import os

    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _YES or raw in _NO:
        return raw in _YES
    raise InputError(f"{name} must be one of {'/'.join(_YES)} or {'/'.join(_NO)}, got {os.environ[name]!r}")
