"""Bare quote responders for B3, each run as its own process (like the service).

`python bench/responder.py fixed NATS_URL SUBJECT`: a fixed reply, no database.
`python bench/responder.py db NATS_URL SUBJECT DATABASE_URL`: one query per request
(the service's QUOTE_STATE_SQL: balance, subscription and usage), the data floor.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime

import asyncpg
import nats

from lumiku_bgremover.billing.quotes import QUOTE_STATE_SQL

REPLY = b'{"tier":"basic","count":1,"total":3,"balance":100,"sufficient":true}'


async def serve(mode: str, url: str, subject: str, database_url: str | None) -> None:
    nc = await nats.connect(url)
    pool = await asyncpg.create_pool(database_url, min_size=4, max_size=4) if database_url else None
    tasks: set[asyncio.Task[None]] = set()

    async def answer(msg: nats.aio.msg.Msg) -> None:
        if pool is None:
            await msg.respond(REPLY)
            return
        user = json.loads(msg.data).get("user_id", "u")
        async with pool.acquire() as conn:
            row = await conn.fetchrow(QUOTE_STATE_SQL, user, datetime.now(UTC).date())
        balance = 0 if row is None or row["_balance"] is None else int(row["_balance"])
        await msg.respond(json.dumps({"balance": balance, "total": 3}).encode())

    async def handler(msg: nats.aio.msg.Msg) -> None:
        if mode == "fixed":
            await answer(msg)
            return
        task = asyncio.create_task(answer(msg))  # concurrent, as the service is
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    await nc.subscribe(subject, queue="bench", cb=handler)
    await nc.flush()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2], sys.argv[3], (sys.argv[4:] or [None])[0]))
