"""``python -m consumer``: the worker process."""

from __future__ import annotations

import asyncio
import os
import sys

from consumer.worker import serve
from service.core.errors import ConfigError
from service.core.logs import configure_logging
from service.core.settings import load_settings


def main() -> None:
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        print(f"feedjobs: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
