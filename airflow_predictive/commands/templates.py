"""``airflow-predictive templates validate|show``: check template files and print the known templates."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from airflow_predictive.templates.loader import (
    BUILTIN_FOLDER,
    TemplateError,
    load_file,
    load_folder,
    registry,
    user_folder,
)
from airflow_predictive.templates.models import TemplateLookupError


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    """Add the ``templates`` command group.

    :param commands: top-level sub-parsers.
    :param bench: benchmark sub-parsers (templates has none).
    """
    parser = commands.add_parser("templates", help="workflow templates: validate files, show templates")
    sub = parser.add_subparsers(dest="templates_command", metavar="ACTION")
    parser.set_defaults(func=lambda _args: (parser.print_help(sys.stderr), 2)[1])

    validate = sub.add_parser(
        "validate", help="validate template files or folders (default: configured folder)"
    )
    validate.add_argument("paths", nargs="*", type=Path, help="template files or folders")
    validate.set_defaults(func=_validate)

    show = sub.add_parser("show", help="list templates, or print one as YAML/JSON")
    show.add_argument("name", nargs="?", help="template name (omit to list all)")
    show.add_argument(
        "--folder", type=Path, help="user templates folder (default: [predictive] templates_folder)"
    )
    show.add_argument("--json", action="store_true", help="JSON instead of YAML")
    show.set_defaults(func=_show)


def _validate(args: argparse.Namespace) -> int:

    paths = list(args.paths) or [BUILTIN_FOLDER, *([user_folder()] if user_folder() else [])]
    count = 0
    try:
        for path in paths:
            if path.is_dir():
                count += len(load_folder(path))
            else:
                load_file(path)
                count += 1
    except TemplateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{count} template(s) valid")
    return 0


def _show(args: argparse.Namespace) -> int:

    try:
        reg = registry(args.folder)
        if args.name is None:
            for template in sorted(reg, key=lambda t: t.name):
                stages = " -> ".join(s.name for s in template.stages)
                print(f"{template.name}\t{stages}\t{reg.sources[template.name]}")
            return 0
        data = reg.get(args.name).to_yaml_dict()
    except (TemplateError, TemplateLookupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(data, indent=2) if args.json else yaml.safe_dump(data, sort_keys=False), end="")
    if args.json:
        print()
    return 0
