"""The argument parser of semsim's commands: a bad argument is one line on stderr, not a usage dump, and exit 2."""

from __future__ import annotations

import argparse
from typing import NoReturn


class CommandParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors print ``PROG: error: MESSAGE`` only (``--help`` still prints
    the usage and every flag)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")
