"""The argument parser of every fpac command (issue 20, "Flags").

`FpacParser` is argparse.ArgumentParser with:
- allow_abbrev=False: `--env-step 100` is an error, not silently --env-steps;
- ArgumentDefaultsHelpFormatter (each default shown once: cli_args writes no default of its own);
- a short error for a bad flag: the error, the closest flag names and a pointer to --help
  (the full usage of fpac-train is ~40 lines of flags, which buried the one line that matters);
- --help without empty argument groups (fpac-actors takes a few config flags only).
"""
from __future__ import annotations

import argparse
import difflib
import re
from typing import Any, NoReturn

_UNKNOWN = re.compile(r"unrecognized arguments: (.*)")


class FpacParser(argparse.ArgumentParser):
    """See the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)

    def _flags(self) -> list[str]:
        return [s for a in self._actions for s in a.option_strings if s.startswith("--")]

    def suggestions(self, message: str) -> list[str]:
        """Close matches among this parser's flags for each unknown flag named in `message`."""
        m = _UNKNOWN.search(message)
        words = m.group(1).split() if m else re.findall(r"--[\w-]+", message)
        out: list[str] = []
        for word in words:
            if word.startswith("-"):
                flag = word.split("=", 1)[0]
                out += [s for s in difflib.get_close_matches(flag, self._flags(), n=3, cutoff=0.6)
                        if s not in out]
        return out

    def error(self, message: str) -> NoReturn:
        """`PROG: error: MESSAGE`, `did you mean ...?` and `see PROG --help`; exit code 2."""
        lines = [f"usage: {self.prog} [options] (see {self.prog} --help)",
                 f"{self.prog}: error: {message}"]
        close = self.suggestions(message)
        if close:
            lines.append(f"did you mean {' or '.join(close)}?")
        self.exit(2, "\n".join(lines) + "\n")

    def format_help(self) -> str:
        hidden = [g for g in self._action_groups if not g._group_actions]  # noqa: SLF001
        kept = self._action_groups
        self._action_groups = [g for g in kept if g not in hidden]
        try:
            return super().format_help()
        finally:
            self._action_groups = kept

