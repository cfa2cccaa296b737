#!/usr/bin/env python3
"""High-cardinality load for bench/analytics.sh: N requests, each on its own connection
from its own loopback source address (127.X.Y.Z, so every request is a new client IP)
and to one of P paths. Prints what it sent and how it was answered, as JSON.

    python3 bench/cardinality.py HOST:PORT [--clients 100000] [--paths 10000]
        [--concurrency 256] [--offset 0]
"""
import argparse
import asyncio
import json
import socket
import time


def source(i: int) -> str:
    # 127.1.0.1 upwards, skipping .0 and .255 in the last byte.
    i = i + (i // 254) * 2 + 1
    return f"127.{1 + (i >> 16) % 250}.{(i >> 8) & 255}.{i & 255}"


async def one(host, port, src, path, stats):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        sock.bind((src, 0))
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readline()
        await reader.read()
        writer.close()
        status = head.split(b" ")[1].decode() if head else "none"
        stats[status] = stats.get(status, 0) + 1
    except OSError as e:
        stats["error"] = stats.get("error", 0) + 1
        stats["last_error"] = str(e)
        sock.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("target")
    p.add_argument("--clients", type=int, default=100_000)
    p.add_argument("--paths", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=256)
    p.add_argument("--offset", type=int, default=0)
    a = p.parse_args()
    host, port = a.target.rsplit(":", 1)
    port = int(port)
    stats = {}
    queue = asyncio.Queue()
    for i in range(a.clients):
        queue.put_nowait(i)

    async def worker():
        while not queue.empty():
            i = queue.get_nowait()
            await one(host, port, source(a.offset + i), f"/c/{i % a.paths}", stats)

    start = time.time()
    await asyncio.gather(*(worker() for _ in range(a.concurrency)))
    stats["seconds"] = round(time.time() - start, 1)
    stats["clients"] = a.clients
    stats["paths"] = a.paths
    print(json.dumps(stats))


asyncio.run(main())
