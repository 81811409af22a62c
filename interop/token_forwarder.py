#!/usr/bin/env python3
"""A loopback HTTP/1.1 forwarder that adds `Authorization: Bearer $FORWARD_TOKEN` to every
request and streams everything else through unchanged (Host, Origin, bodies, SSE responses),
so a client without OAuth support can be pointed at a protected server.

    FORWARD_TOKEN=... token_forwarder.py LISTEN_PORT UPSTREAM_PORT
"""

import asyncio
import os
import sys

TOKEN = os.environ["FORWARD_TOKEN"].encode()


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001
            pass


async def forward_requests(client: asyncio.StreamReader, upstream: asyncio.StreamWriter) -> None:
    """Copies requests one by one, rewriting only the Authorization header."""
    while True:
        head = await client.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        headers = [h for h in lines[1:] if not h.lower().startswith(b"authorization:")]
        headers.append(b"Authorization: Bearer " + TOKEN)
        request = b"\r\n".join([lines[0], *headers]) + b"\r\n\r\n"
        fields = {h.split(b":", 1)[0].strip().lower(): h.split(b":", 1)[1].strip() for h in headers if b":" in h}
        if fields.get(b"transfer-encoding", b"").lower() != b"chunked":
            # Head and body in one write, as clients send them: a server that answers from
            # the head alone (a refused Host) and finds no body read yet closes the
            # connection, and the client's next request on it would be reset.
            if (length := int(fields.get(b"content-length", b"0") or 0)) > 0:
                request += await client.readexactly(length)
            upstream.write(request)
        else:
            upstream.write(request)
            while True:
                size_line = await client.readuntil(b"\r\n")
                upstream.write(size_line)
                size = int(size_line.split(b";")[0], 16)
                upstream.write(await client.readexactly(size + 2))
                if size == 0:
                    break
        await upstream.drain()


async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, upstream_port: int) -> None:
    try:
        up_r, up_w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", upstream_port), 5)
    except (OSError, asyncio.TimeoutError):
        client_w.close()
        return
    back = asyncio.create_task(pump(up_r, client_w))
    try:
        await forward_requests(client_r, up_w)
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        # The client closed its side (HTTP clients close whole connections): give a response
        # in flight a moment, then drop the upstream connection too.
        try:
            await asyncio.wait_for(asyncio.shield(back), 2)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            back.cancel()
        up_w.close()


async def main() -> None:
    listen_port, upstream_port = int(sys.argv[1]), int(sys.argv[2])
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, upstream_port), "127.0.0.1", listen_port, limit=1 << 20
    )
    print(f"forwarding 127.0.0.1:{listen_port} -> 127.0.0.1:{upstream_port} with a bearer token", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
