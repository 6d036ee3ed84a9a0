"""Reading YAML configuration files strictly: UTF-8 text, and no key given twice in one mapping.

PyYAML silently keeps the last of two equal keys, so ``mode: forecast_only`` followed by
``mode: forecast_and_scale`` would scale a pool its owner believes is only forecast. Both the pools
loader and the template loader read through here, so both refuse it the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlFileError(ValueError):
    """A YAML file cannot be read as written: ``file:line: message`` (line 0 when unknown).

    :param path: the file (or the source name given for a string).
    :param line: 1-based line of the problem, 0 when unknown.
    :param key: the offending key, empty when none.
    :param reason: what is wrong and how to fix it.
    """

    def __init__(self, path: Path | str, line: int, reason: str, key: str = "") -> None:
        self.path = str(path)
        self.line = line
        self.key = key
        self.reason = reason
        super().__init__(f"{self.path}:{line}: {reason}" if line else f"{self.path}: {reason}")


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """One mapping gives the same key twice (a YAMLError, so callers' YAML handling still applies)."""

    def __init__(self, key: str, first_line: int, node: yaml.Node) -> None:
        self.key = key
        self.line = node.start_mark.line + 1
        super().__init__(
            None,
            None,
            f"duplicate key {key!r} (first given on line {first_line}); keep only one",
            node.start_mark,
        )


def check_unique_keys(node: yaml.MappingNode) -> None:
    """Raise :class:`DuplicateKeyError` at the second occurrence of a key in one mapping node.

    Merge keys (``<<: *defaults``) are not keys: a mapping may override what it merges.
    """
    seen: dict[tuple[str, str], int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
            continue
        key = (key_node.tag, key_node.value)
        if key in seen:
            raise DuplicateKeyError(key_node.value, seen[key], key_node)
        seen[key] = key_node.start_mark.line + 1


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose mappings refuse a key given twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        check_unique_keys(node)
        return super().construct_mapping(node, deep=deep)


def read_text(path: Path | str) -> str:
    """The file's text, decoded as UTF-8 (a byte-order mark is allowed).

    :raises FileNotFoundError: the file does not exist (callers say which setting names it).
    :raises YamlFileError: the file cannot be read or is not UTF-8 text.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise YamlFileError(path, 0, f"cannot read the file: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise YamlFileError(
            path, line, f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        ) from None


def load(text: str, source: Path | str = "<string>") -> Any:
    """Parse one YAML document with :class:`UniqueKeyLoader`.

    :raises YamlFileError: invalid YAML or a duplicate key, naming ``source`` and the line.
    """
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader subclass: no arbitrary objects
    except DuplicateKeyError as exc:
        raise YamlFileError(source, exc.line, exc.problem, key=exc.key) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise YamlFileError(source, mark.line + 1 if mark else 0, f"not valid YAML: {exc}") from None
