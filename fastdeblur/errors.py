"""The two error kinds users catch: bad input and bad or missing weights.

Both subclass the builtin a caller would expect (ValueError, RuntimeError), so existing
`except ValueError` code keeps working; messages name the argument or file and what to do.
"""


class InputError(ValueError):
    """An image, tensor, path or option that fastdeblur cannot use as given."""


class WeightsError(RuntimeError):
    """Weights that are missing, fail their sha256 check, or do not load into the model."""
