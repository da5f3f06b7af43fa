"""``python -m consumer``: the worker process."""

from __future__ import annotations

import asyncio

from consumer.worker import serve
from service.core.boot import settings_or_exit


def main() -> None:
    asyncio.run(serve(settings_or_exit()))


if __name__ == "__main__":
    main()
