"""A slow client must hold back a fast model: memory per stream stays bounded."""

from __future__ import annotations

import asyncio
import unittest
from typing import cast

from pyworker import Backend, post
from pyworker.config import WorkerConfig
from pyworker.worker import Worker
from tests.support import body, post_bytes
from workers.hello_world.server import GenerateStreamHandler

CHUNK = b"data: " + b"x" * 4090 + b"\n\n"  # about 4 KiB per event
TOTAL_BYTES = 64 * 1024 * 1024


class SlowClient(unittest.IsolatedAsyncioTestCase):
    async def test_model_is_paused_while_the_client_does_not_read(self) -> None:
        written = 0
        finished = asyncio.Event()

        async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal written
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            frame = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)
            try:
                while written < TOTAL_BYTES:
                    writer.write(frame)
                    await writer.drain()  # blocks once the worker stops reading
                    written += len(CHUNK)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
            except ConnectionError:
                pass
            finally:
                finished.set()
                writer.close()

        model = await asyncio.start_server(firehose, "127.0.0.1", 0)
        self.addAsyncCleanup(model.wait_closed)
        self.addCleanup(model.close)
        port = model.sockets[0].getsockname()[1]
        backend = Backend(model_server_url=f"http://127.0.0.1:{port}")
        config = WorkerConfig.from_env(
            {
                "WORKER_HOST": "127.0.0.1",
                "WORKER_PORT": "0",
                "MODEL_LOG": "/dev/null",
                "UNSECURED": "true",
                "REPORT_ADDR": "off",
            }
        )
        worker = Worker(backend, [post("/generate_stream", backend.create_handler(GenerateStreamHandler()))], config)
        await worker.start()
        self.addAsyncCleanup(worker.stop)

        reader, writer = await asyncio.open_connection("127.0.0.1", worker.port, limit=1024)
        data = body("go")
        writer.write(post_bytes("/generate_stream", data))
        await reader.readuntil(b"\r\n\r\n")
        # Stop reading: our socket buffer fills, then the worker's, then the model must wait.
        transport = cast(asyncio.Transport, writer.transport)
        transport.pause_reading()
        await asyncio.sleep(1.0)
        stalled_at = written
        await asyncio.sleep(0.5)
        self.assertEqual(written, stalled_at, "the model kept writing while nobody read")
        # Socket buffers on both hops plus the worker's bounded buffers: a few MiB at most.
        self.assertLess(stalled_at, 16 * 1024 * 1024)
        # Reading again lets the whole stream through.
        transport.resume_reading()
        received = 0
        while not finished.is_set() or received < TOTAL_BYTES:
            piece = await asyncio.wait_for(reader.read(1 << 20), 10)
            if not piece:
                break
            received += piece.count(b"data: ") * len(CHUNK)
            if b"\r\n0\r\n\r\n" in piece[-16:]:
                break
        self.assertGreaterEqual(written, TOTAL_BYTES)
        writer.close()


if __name__ == "__main__":
    unittest.main()
