"""Human units in templates (``4GiB``, ``500Mbps``, ``45m``) parsed into the demand contract's units.

Every quantity needs an explicit unit: a bare ``4`` for memory could mean GiB or MB, and guessing
wrong provisions a thousand times too much or too little.
"""

from __future__ import annotations

import re

_NUMBER = r"(?P<num>\d+(?:\.\d+)?)\s*"

# Memory and storage convert to GiB (the demand contract's unit); decimal units are accepted too.
BYTE_UNITS: dict[str, float] = {
    "KiB": 1 / 1024**2,
    "MiB": 1 / 1024,
    "GiB": 1.0,
    "TiB": 1024.0,
    "KB": 1e3 / 1024**3,
    "MB": 1e6 / 1024**3,
    "GB": 1e9 / 1024**3,
    "TB": 1e12 / 1024**3,
}
# Network converts to Mbit/s.
RATE_UNITS: dict[str, float] = {
    "Kbps": 1e-3,
    "Mbps": 1.0,
    "Gbps": 1e3,
    "Kbit/s": 1e-3,
    "Mbit/s": 1.0,
    "Gbit/s": 1e3,
}
# Durations convert to seconds; several parts may be combined (``1h30m``).
TIME_UNITS: dict[str, float] = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([a-zA-Z]+)")


def _parse(value: object, units: dict[str, float], what: str, example: str) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a {what} with a unit such as {example!r}, got {value!r}")
    if isinstance(value, int | float):
        raise ValueError(f"{what} {value!r} has no unit; write it like {example!r}")
    match = re.fullmatch(_NUMBER + r"(?P<unit>[A-Za-z/]+)", value.strip())
    if not match:
        raise ValueError(f"cannot read {what} {value!r}; write it like {example!r}")
    unit = match["unit"]
    if unit not in units:
        raise ValueError(f"unknown {what} unit {unit!r} in {value!r}; known units: {', '.join(units)}")
    return float(match["num"]) * units[unit]


def parse_bytes_gib(value: object) -> float:
    """Parse a memory/storage size (``4GiB``, ``512MiB``, ``100GB``) into GiB.

    :param value: the text from the template.
    """
    return _parse(value, BYTE_UNITS, "size", "4GiB")


def parse_rate_mbps(value: object) -> float:
    """Parse a network rate (``500Mbps``, ``1Gbps``) into Mbit/s.

    :param value: the text from the template.
    """
    return _parse(value, RATE_UNITS, "network rate", "500Mbps")


def parse_duration_s(value: object) -> float:
    """Parse a duration (``45m``, ``2h``, ``1h30m``, ``90s``, ``1d``) into seconds.

    :param value: the text from the template.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"expected a duration such as '45m', got {value!r}")
    if isinstance(value, int | float):
        raise ValueError(f"duration {value!r} has no unit; write it like '45m' or '1h30m'")
    text = value.replace(" ", "")
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"cannot read duration {value!r}; write it like '45m' or '1h30m'")
    total = 0.0
    for number, unit in parts:
        if unit not in TIME_UNITS:
            raise ValueError(
                f"unknown duration unit {unit!r} in {value!r}; known units: {', '.join(TIME_UNITS)}"
            )
        total += float(number) * TIME_UNITS[unit]
    return total


def format_duration(seconds: float) -> str:
    """Render seconds back as the shortest template duration (``5400 -> '1h30m'``).

    :param seconds: a non-negative duration.
    """
    seconds = round(seconds)
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out or "0s"
