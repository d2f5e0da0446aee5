"""Command-line flags generated from the config dataclasses (each field's docstring is its --help).

Every field of RunConfig and its sections becomes one flat flag (`--num-points`, `--replay-ratio`,
`--no-velocity`); field names are unique across sections, which a test checks.
Each default appears once in --help (issue 20: the parsers' formatter used to add a second copy);
--task lists the tasks; a section with no flag (fpac-actors takes a few) adds no empty group.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import os
from typing import Any, Sequence

from fpac_async import config as C

SECTIONS = {"agent": C.AgentConfig, "env": C.EnvConfig, "replay": C.ReplayConfig,
            "learner": C.LearnerConfig}


@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a dataclass, read from its source."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = nxt.value.value.strip()
    return docs


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _parse_type(f: dataclasses.Field) -> Any:
    t = str(f.type)
    if "float" in t:
        return float
    if "int" in t:
        return int
    return str


def _add_fields(group: Any, cls: type, defaults: Any, dest_prefix: str,
                only: set[str] | None) -> None:
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type) or f.name in SECTIONS:
            continue
        if only is not None and f.name not in only:
            continue
        default = getattr(defaults, f.name)
        help_text = docs.get(f.name, "").replace("%", "%%")
        if f.name == "task":
            help_text = "the task, one of: " + ", ".join(C.TASKS)
        dest = dest_prefix + f.name
        if str(f.type) == "bool":  # BooleanOptionalAction adds the default itself
            group.add_argument(_flag(f.name), dest=dest, default=default, help=help_text,
                               action=argparse.BooleanOptionalAction)
        else:
            group.add_argument(_flag(f.name), dest=dest, default=default,
                               help=help_text + " (default: %(default)s)",
                               type=_parse_type(f), metavar=f.name.upper())


def add_config_args(parser: argparse.ArgumentParser, defaults: C.RunConfig | None = None,
                    only: set[str] | None = None) -> None:
    """Add one flag per config field (or only the named fields) to the parser."""
    defaults = defaults or C.RunConfig()
    _add_fields(parser.add_argument_group("run"), C.RunConfig, defaults, "run.", only)
    for section, cls in SECTIONS.items():
        group = parser.add_argument_group(section, cls.__doc__)
        _add_fields(group, cls, getattr(defaults, section), section + ".", only)


def config_from_args(args: argparse.Namespace, base: C.RunConfig | None = None) -> C.RunConfig:
    """Build a RunConfig from parsed flags (fields without a flag keep base's values)."""
    cfg = base or C.RunConfig()
    values = vars(args)
    top = {k[4:]: v for k, v in values.items() if k.startswith("run.")}
    sections = {}
    for section in SECTIONS:
        prefix = section + "."
        changes = {k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)}
        sections[section] = dataclasses.replace(getattr(cfg, section), **changes)
    return dataclasses.replace(cfg, **top, **sections)


def explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The destinations of the flags actually given in argv (a resumed run keeps the rest)."""
    probe = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for action in parser._actions:  # noqa: SLF001 - argparse has no public way to copy actions
        if action.option_strings and not isinstance(action, argparse._HelpAction):  # noqa: SLF001
            probe._add_action(_suppressed(action))  # noqa: SLF001
    known, _ = probe.parse_known_args(list(argv))
    return set(vars(known))


def _suppressed(action: argparse.Action) -> argparse.Action:
    copy = argparse.Action.__new__(type(action))
    copy.__dict__.update(action.__dict__)
    copy.default = argparse.SUPPRESS
    return copy


def explicit_args(parser: argparse.ArgumentParser, args: argparse.Namespace,
                  argv: Sequence[str]) -> argparse.Namespace:
    """Only the parsed values of the flags given in argv (to apply over a saved or preset config)."""
    given = explicit_dests(parser, argv)
    return argparse.Namespace(**{k: v for k, v in vars(args).items() if k in given})


def run_config(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str],
               resume_dir: str | None = None) -> C.RunConfig:
    """The config a CLI runs with. Fresh: the task's defaults (C.TASK_DEFAULTS) under the flags.
    Resuming: the run's own config.json with only the flags given now on top (never silently the
    defaults); ConfigError if it has none."""
    explicit = explicit_args(parser, args, argv)
    if resume_dir is not None:
        base = C.load_config(os.path.join(resume_dir, "config.json"))
        return config_from_args(explicit, base=base)
    return config_from_args(explicit, base=C.with_task_defaults(config_from_args(args)))
