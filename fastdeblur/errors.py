"""The two error kinds users catch: bad input and bad or missing weights.

Both subclass the builtin a caller would expect (ValueError, RuntimeError), so existing
`except ValueError` code keeps working; messages name the argument or file and what to do.
"""


class InputError(ValueError):
    """An image, tensor, path or option that fastdeblur cannot use as given."""


class ConfigError(InputError):
    """A FASTDEBLUR_* environment variable set to a value fastdeblur cannot use: the same for every
    input, so the command stops at the first instead of failing each file alike."""


class WeightsError(RuntimeError):
    """Weights that are missing, fail their sha256 check, or do not load into the model."""


def missing_path(src, what: str = "file") -> str:
    """The message for a path that names nothing: "<path>: no such <what>", with a hint where the
    string was meant as something else: a URL (nothing is downloaded; pathlib has already made
    "https://" "https:/") or a "~" path (neither Python nor a quoted shell word expands it)."""
    import os
    import re

    text = str(os.fspath(src))
    message = f"{text}: no such {what}"
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", text):  # also as pathlib leaves it: https:/host/...
        return message + "; URLs are not downloaded: fetch the file first"
    if text.startswith("~") and os.path.expanduser(text) != text:
        return message + f" (~ is not expanded here: did you mean {os.path.expanduser(text)}?)"
    return message


def not_a_file(path) -> str:
    """The message for a path that exists but is no regular file: a folder, a device, or a pipe
    (a shell's `<(...)`, which can be read once only: its bytes go in another way)."""
    import stat

    try:
        fifo = stat.S_ISFIFO(path.stat().st_mode)
    except OSError:
        fifo = False
    if fifo:
        return (f"{path}: a pipe, not a file: give its bytes instead (the command reads them from standard input "
                f"with `-`: fastdeblur - -o OUT < ...; deblur() takes bytes)")
    return f"{path}: not a file"


_YES, _NO = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def env_flag(name: str, default: bool) -> bool:
    """The environment variable `name` as a switch: 1/true/yes/on or 0/false/no/off (any case);
    unset or empty gives `default`; anything else is a ConfigError naming the variable."""
    import os

    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in _YES or raw in _NO:
        return raw in _YES
    raise ConfigError(f"{name} must be one of {'/'.join(_YES)} or {'/'.join(_NO)}, got {os.environ[name]!r}")
