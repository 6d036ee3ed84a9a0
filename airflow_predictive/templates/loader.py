"""Load workflow templates from YAML with errors that name the file, the line and the field.

YAML is composed into nodes first so every value keeps its line; pydantic's error location
(``stages -> 1 -> memory``) is then mapped back to that line. Built-in templates ship in
``builtin/``; users add theirs in the folder named by ``[predictive] templates_folder``. A user
template with a built-in's name replaces it (so a platform team can retune the defaults).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from airflow_predictive import config
from airflow_predictive.contracts import yamlfile
from airflow_predictive.templates.models import Stage, StageReferenceError, Template, TemplateLookupError

BUILTIN_FOLDER = Path(__file__).parent / "builtin"


class TemplateError(ValueError):
    """A template file is invalid: the message reads ``file:line: field: what is wrong``.

    :param path: the template file.
    :param line: 1-based line of the offending field (0 when unknown).
    :param field: dotted path of the field, e.g. ``stages[1].memory``.
    :param message: what is wrong and how to fix it.
    """

    def __init__(self, path: Path | str, line: int, field: str, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.field = field
        self.reason = message
        where = f"{self.path}:{line}" if line else str(self.path)
        super().__init__(f"{where}: {field or '(template)'}: {message}")


def _plain(node: yaml.Node, lines: dict[tuple, int], loc: tuple, path: Path | str) -> Any:
    """Turn a composed YAML node into plain data, recording each location's line."""
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        try:
            yamlfile.check_unique_keys(node)
        except yamlfile.DuplicateKeyError as exc:
            raise TemplateError(path, exc.line, _field_name((*loc, exc.key)), exc.problem) from None
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            out[key] = _plain(value_node, lines, (*loc, key), path)
            # A key's own line is where an "unknown key" or "bad value" error points.
            lines[(*loc, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_plain(item, lines, (*loc, i), path) for i, item in enumerate(node.value)]
    return yaml.safe_load(yaml.serialize(node))


def _field_name(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(loc: tuple, lines: dict[tuple, int]) -> int:
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return 0


def parse_template(text: str, path: Path | str = "<string>") -> Template:
    """Validate one template document.

    :param text: YAML text of one template.
    :param path: where the text came from, for error messages.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise TemplateError(path, mark.line + 1 if mark else 0, "", f"invalid YAML: {exc}") from None
    if node is None or not isinstance(node, yaml.MappingNode):
        raise TemplateError(path, 1, "", "a template file must be a mapping with 'name' and 'stages'")
    lines: dict[tuple, int] = {}
    data = _plain(node, lines, (), path)
    try:
        return Template.model_validate(data)
    except ValidationError as exc:
        # A misspelt key shows up both as "unknown key" and as "missing": report the misspelling.
        error = sorted(exc.errors(), key=lambda e: e["type"] == "missing")[0]
        loc = tuple(error["loc"])
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, StageReferenceError):
            loc = ("stages", cause.index, "after")
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}" + _known_keys(loc)
            close = difflib.get_close_matches(str(loc[-1]), _model_keys(loc), n=1)
            message += f" (did you mean {close[0]!r}?)" if close else ""
        elif error["type"] == "missing":
            message = f"missing required key {loc[-1]!r}"
        raise TemplateError(path, _line_of(loc, lines), _field_name(loc), message) from None


def _model_keys(loc: tuple) -> list[str]:
    return list((Stage if "stages" in loc[:-1] else Template).model_fields)


def _known_keys(loc: tuple) -> str:
    return f"; known keys: {', '.join(_model_keys(loc))}"


def load_file(path: Path | str) -> Template:
    """Load and validate one template file.

    :param path: a ``*.yaml`` template file.
    """
    path = Path(path)
    try:
        text = yamlfile.read_text(path)
    except OSError as exc:
        raise TemplateError(path, 0, "", f"cannot read the template file: {exc.strerror}") from None
    except yamlfile.YamlFileError as exc:
        raise TemplateError(path, exc.line, "", exc.reason) from None
    return parse_template(text, path)


def load_folder(folder: Path | str) -> dict[str, tuple[Template, Path]]:
    """Load every ``*.yaml``/``*.yml`` template of a folder, refusing two files with one name.

    :param folder: the folder to read.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise TemplateError(folder, 0, "", "templates folder does not exist or is not a folder")
    found: dict[str, tuple[Template, Path]] = {}
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        template = load_file(path)
        if template.name in found:
            raise TemplateError(
                path, 0, "name", f"template {template.name!r} is also defined in {found[template.name][1]}"
            )
        found[template.name] = (template, path)
    return found


def user_folder() -> Path | None:
    """The user templates folder from ``[predictive] templates_folder`` (None when unset)."""
    return config.get_path("templates_folder") if config.get("templates_folder").strip() else None


class TemplateRegistry:
    """All templates a deployment knows: built-ins, replaced or extended by the user folder.

    :param folders: folders read in order; a later folder's template replaces an earlier one's.
    """

    def __init__(self, folders: Iterable[Path | str]) -> None:
        self.templates: dict[str, Template] = {}
        self.sources: dict[str, Path] = {}
        for folder in folders:
            for name, (template, path) in load_folder(folder).items():
                self.templates[name] = template
                self.sources[name] = path

    def get(self, name: str) -> Template:
        """Return template ``name`` or raise naming it and the known ones.

        :param name: template name.
        """
        try:
            return self.templates[name]
        except KeyError:
            raise TemplateLookupError(
                f"unknown workflow template {name!r}; known templates: {', '.join(sorted(self.templates))}"
            ) from None

    def __iter__(self):
        return iter(self.templates.values())


def registry(folder: Path | str | None = None) -> TemplateRegistry:
    """The deployment's templates: built-ins plus ``folder`` (default: the configured user folder).

    :param folder: user templates folder; None reads ``[predictive] templates_folder``.
    """
    chosen = Path(folder) if folder is not None else user_folder()
    return _cached_registry(str(chosen) if chosen else "")


@functools.lru_cache(maxsize=8)
def _cached_registry(folder: str) -> TemplateRegistry:
    # Parsing DAG files calls this for every bound task: read the YAML once per process.
    return TemplateRegistry([BUILTIN_FOLDER, *([Path(folder)] if folder else [])])


def clear_cache() -> None:
    """Forget loaded templates (after editing the files in a long-lived process)."""
    _cached_registry.cache_clear()
