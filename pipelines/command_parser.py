"""The argument parser of semsim's commands: a bad argument is one line on stderr, not a usage dump, and exit 2."""

from __future__ import annotations

import argparse
import difflib
from typing import NoReturn


class CommandParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors print ``PROG: error: MESSAGE`` only, and exit 2 (``--help``
    still prints the usage and every flag); an unknown flag is named with the closest known one, as ``semsim batch``
    and ``semsim stream`` name it."""

    def error(self, message: str) -> NoReturn:
        unknown = message.removeprefix("unrecognized arguments: ")
        if unknown != message:
            message = unknown_argument(unknown.split()[0], self._known_flags())
        self.exit(2, f"{self.prog}: error: {message}\n")

    def _known_flags(self) -> list[str]:
        """The flags of this parser and of its subcommands' parsers."""
        flags = list(self._option_string_actions)
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                flags += [flag for parser in action.choices.values() for flag in parser._option_string_actions]
        return flags


def unknown_argument(argument: str, known: list[str]) -> str:
    """The error for the first argument no parser took: a stray value, or an unknown flag with the closest of
    ``known`` (the flags there are)."""
    if not argument.startswith("-"):
        return f"unexpected argument {argument!r} (every value follows its flag: --flag value)"
    flag = argument.split("=", 1)[0]
    close = difflib.get_close_matches(flag, known, n=1)
    return f"unknown flag {flag}" + (f" (did you mean {close[0]}?)" if close else "")
