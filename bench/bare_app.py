"""The gateway bench's reference: a bare aiohttp app answering a constant JSON body.

``python bench/bare_app.py PORT BODY_FILE``: every GET answers the body read from the file,
with the same headers a job answer carries, so only the gateway's own work differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from aiohttp import web


def main() -> None:
    port = int(sys.argv[1])
    body = Path(sys.argv[2]).read_bytes()
    headers = {"ETag": '"bare.1"', "Cache-Control": "private, no-cache"}

    async def answer(request: web.Request) -> web.Response:
        return web.Response(
            body=body, headers=headers, content_type="application/json", charset="utf-8"
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", answer)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
