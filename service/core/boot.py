"""What every process does first: its settings from the environment, then its logging.

A bad setting stops the process with exit status 2 and one line naming the variable.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

from service.core.errors import ConfigError
from service.core.logs import configure_logging
from service.core.settings import Settings, load_settings


def settings_or_exit() -> Settings:
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        print(f"feedjobs: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings)
    return settings


def refuse(message: str) -> NoReturn:
    """One line on stderr naming what is wrong (and the setting to change), exit status 2:
    what an operator sees instead of a traceback."""
    print(f"feedjobs: {message}", file=sys.stderr)
    raise SystemExit(2)
