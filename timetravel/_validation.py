"""Checks of integer, real and label arguments at the public boundary, with one style of message.

Each check names the argument, says what was expected and shows what came in
("n_neighbors must be a positive integer, got 0"), and raises the caller's
error class, so every module reports bad arguments alike.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np


def check_int(
    value,
    name: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    none_ok: bool = False,
    error: type[Exception] = ValueError,
) -> int | None:
    """``value`` as an ``int`` within ``[minimum, maximum]`` (bools are refused), or ``error``.

    Parameters
    ----------
    value : object
    name : str
        The argument's name, for the message.
    minimum, maximum : int, optional
        Inclusive bounds.
    none_ok : bool
        Accept (and return) None.
    error : exception class
        Raised with the message.
    """
    if value is None and none_ok:
        return None
    ok = isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    if not ok:
        raise error(f"{name} must be {_int_phrase(minimum, maximum)}{' or None' if none_ok else ''}, got {value!r}")
    return int(value)


def check_index(value, name: str, n: int, *, error: type[Exception] = ValueError) -> int:
    """``value`` as an ``int`` in ``[0, n)`` (a sample number), or ``error``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, Integral) or not 0 <= value < n:
        raise error(f"{name} must be an integer in [0, {n}), got {value!r}")
    return int(value)


def _int_phrase(minimum: int | None, maximum: int | None) -> str:
    if maximum is None:
        if minimum == 1:
            return "a positive integer"
        return "an integer" if minimum is None else f"an integer >= {minimum}"
    if minimum is None:
        return f"an integer <= {maximum}"
    return f"an integer in [{minimum}, {maximum}]"


def check_real(
    value,
    name: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    error: type[Exception] = ValueError,
) -> float:
    """``value`` as a finite ``float`` within the bounds (inclusive unless ``exclusive_*``), or ``error``."""
    ok = isinstance(value, Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)
    if ok and minimum is not None:
        ok = value > minimum if exclusive_minimum else value >= minimum
    if ok and maximum is not None:
        ok = value < maximum if exclusive_maximum else value <= maximum
    if not ok:
        if maximum is not None and minimum is not None:
            expected = (f"in {'(' if exclusive_minimum else '['}{minimum:g}, {maximum:g}"
                        f"{')' if exclusive_maximum else ']'}")
        elif minimum is not None:
            expected = f"a finite number {'>' if exclusive_minimum else '>='} {minimum:g}"
        elif maximum is not None:
            expected = f"a finite number {'<' if exclusive_maximum else '<='} {maximum:g}"
        else:
            expected = "a finite number"
        raise error(f"{name} must be {expected}, got {value!r}")
    return float(value)


def check_labels(
    values, name: str, n_classes: int, *, n: int | None = None, error: type[Exception] = ValueError
) -> np.ndarray:
    """``values`` as a 1-d int64 array of labels in ``[0, n_classes)`` (of length ``n`` when given), or ``error``."""
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise error(f"{name} must be a 1-d integer array, got shape {array.shape} dtype {array.dtype}")
    if n is not None and len(array) != n:
        raise error(f"{name} has {len(array)} entries but {n} were expected")
    if len(array) and (array.min() < 0 or array.max() >= n_classes):
        raise error(f"{name} must lie in [0, {n_classes}), found [{array.min()}, {array.max()}]")
    return array.astype(np.int64)
