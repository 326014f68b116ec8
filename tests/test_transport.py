"""The server's own accept and socket transport, spoken to over real sockets."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap
import time
import unittest

from pyworker.http.transport import HIGH_WATER, LOW_WATER, Listener, SocketTransport
from tests.support import until

# How long a test waits for the loop to do what it should have done.
WAIT_S = 2.0


class Recorder(asyncio.Protocol):
    """A protocol that writes down every call, in order."""

    def __init__(self, on_made: object = None, on_data: object = None) -> None:
        self.events: list[str] = []
        self.data = bytearray()
        self.transport: SocketTransport | None = None
        self.lost = asyncio.get_running_loop().create_future()
        self.on_made = on_made
        self.on_data = on_data
        self.keep_open_on_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, SocketTransport)
        self.transport = transport
        self.events.append("made")
        # Runs in the next turn: anything recorded before it happened in this one.
        asyncio.get_running_loop().call_soon(self.events.append, "next turn")
        if callable(self.on_made):
            self.on_made(transport)

    def data_received(self, data: bytes) -> None:
        self.events.append("data")
        self.data += data
        if callable(self.on_data) and self.transport is not None:
            self.on_data(self.transport)

    def eof_received(self) -> bool:
        self.events.append("eof")
        return self.keep_open_on_eof

    def pause_writing(self) -> None:
        self.events.append(f"pause {self.transport.get_write_buffer_size() if self.transport else -1}")

    def resume_writing(self) -> None:
        self.events.append(f"resume {self.transport.get_write_buffer_size() if self.transport else -1}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append("lost")
        if not self.lost.done():
            self.lost.set_result(exc)


class TransportCase(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self) -> None:
        self.protocols: list[Recorder] = []
        self.on_made: object = None
        self.on_data: object = None

        def factory() -> Recorder:
            protocol = Recorder(self.on_made, self.on_data)
            self.protocols.append(protocol)
            return protocol

        self.listener = await Listener.open("127.0.0.1", 0, factory)
        self.port = self.listener.sockets[0].getsockname()[1]

    async def asyncTearDown(self) -> None:
        self.listener.close()

    def client(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.addCleanup(sock.close)
        return sock

    async def accepted(self) -> Recorder:
        for _ in range(500):
            if self.protocols:
                return self.protocols[-1]
            await asyncio.sleep(0.002)
        self.fail("no connection accepted")

    async def test_a_request_sent_with_the_connect_is_read_in_the_turn_of_the_accept(self) -> None:
        sock = self.client()
        sock.sendall(b"hello")  # before the loop runs the accept: it waits in the socket
        protocol = await self.accepted()
        await until(lambda: "next turn" in protocol.events, "the next turn", WAIT_S)
        self.assertEqual(protocol.events[:3], ["made", "data", "next turn"])
        self.assertEqual(bytes(protocol.data), b"hello")
        transport = protocol.transport
        assert transport is not None
        self.assertEqual(transport.get_extra_info("peername"), sock.getsockname())
        self.assertEqual(transport.get_extra_info("sockname")[1], self.port)
        # Registered for reads once that turn is over: what comes next is read too.
        sock.sendall(b" again")
        await until(lambda: protocol.data == b"hello again", "the data after the first read", WAIT_S)
        self.assertNotEqual(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 0)

    async def test_reading_paused_by_the_first_read_stays_paused_until_resumed(self) -> None:
        # Paused in the turn of the accept, before the socket is registered for reads.
        self.on_data = lambda transport: transport.pause_reading()
        sock = self.client()
        sock.sendall(b"first")
        protocol = await self.accepted()
        transport = protocol.transport
        assert transport is not None
        await until(lambda: "next turn" in protocol.events, "the next turn", WAIT_S)
        self.assertEqual(protocol.events[:3], ["made", "data", "next turn"])
        sock.sendall(b" second")
        await asyncio.sleep(0.05)
        self.assertEqual(bytes(protocol.data), b"first")
        self.assertFalse(transport.is_reading())
        transport.resume_reading()
        await until(lambda: protocol.data == b"first second", "the data after resuming", WAIT_S)

    async def test_data_after_the_accept_is_read_when_it_comes(self) -> None:
        sock = self.client()
        protocol = await self.accepted()
        await until(lambda: "next turn" in protocol.events, "the next turn", WAIT_S)
        sock.sendall(b"later")
        await until(lambda: protocol.data == b"later", "the data", WAIT_S)

    async def test_a_large_answer_to_a_client_not_reading_pauses_then_resumes_and_arrives_whole(self) -> None:
        sock = self.client()
        protocol = await self.accepted()
        transport = protocol.transport
        assert transport is not None
        head = b"head:"
        body = bytes(range(256)) * 40_000  # 10 MB: far more than the socket buffers hold
        transport.writelines([head, body])
        tail = [b":%04d" % i for i in range(300)]  # many buffered pieces: more than one sendmsg takes
        for piece in tail:
            transport.write(piece)
        self.assertTrue(any(e.startswith("pause") for e in protocol.events), protocol.events)
        self.assertGreater(transport.get_write_buffer_size(), HIGH_WATER)
        received = bytearray()
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        while len(received) < len(head) + len(body) + 5 * len(tail):
            try:
                chunk = await loop.sock_recv(sock, 1 << 20)
            except BlockingIOError:
                continue
            self.assertTrue(chunk)
            received += chunk
        self.assertEqual(bytes(received), head + body + b"".join(tail))
        self.assertEqual(transport.get_write_buffer_size(), 0)
        pauses = [e for e in protocol.events if e.startswith(("pause", "resume"))]
        self.assertEqual([e.split()[0] for e in pauses], ["pause", "resume"])
        self.assertLessEqual(int(pauses[1].split()[1]), LOW_WATER)

    async def test_close_sends_what_is_buffered_first_and_abort_does_not(self) -> None:
        sock = self.client()
        protocol = await self.accepted()
        transport = protocol.transport
        assert transport is not None
        body = b"x" * 30_000_000  # more than loopback's socket buffers take at once
        transport.write(body)
        self.assertGreater(transport.get_write_buffer_size(), 0)
        transport.close()
        self.assertTrue(transport.is_closing())
        self.assertFalse(protocol.lost.done())  # not before the buffer is sent
        received = await asyncio.to_thread(read_all, sock)
        self.assertEqual(len(received), len(body))
        self.assertIsNone(await asyncio.wait_for(protocol.lost, 5))

        sock2 = self.client()
        await until(lambda: len(self.protocols) == 2, "a second connection", WAIT_S)
        second = self.protocols[1]
        assert second.transport is not None
        second.transport.write(body)
        self.assertGreater(second.transport.get_write_buffer_size(), 0)
        second.transport.abort()
        await asyncio.wait_for(second.lost, 5)
        self.assertLess(len(await asyncio.to_thread(read_all, sock2)), len(body))
        second.transport.write(b"after")  # ignored, as asyncio ignores writes to a lost connection

    async def test_write_eof_ends_the_answer_and_reading_goes_on(self) -> None:
        sock = self.client()
        protocol = await self.accepted()
        transport = protocol.transport
        assert transport is not None
        self.assertTrue(transport.can_write_eof())
        transport.write(b"answer")
        transport.write_eof()
        with self.assertRaises(RuntimeError):
            transport.write(b"more")
        self.assertEqual(await asyncio.to_thread(read_all, sock), b"answer")
        sock.sendall(b"still read")
        await until(lambda: protocol.data == b"still read", "the data after write_eof", WAIT_S)

    async def test_the_client_closing_gives_eof_then_close(self) -> None:
        sock = self.client()
        protocol = await self.accepted()
        sock.sendall(b"bye")
        sock.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(protocol.lost, 5)
        self.assertEqual(protocol.events[-2:], ["eof", "lost"])
        self.assertEqual(bytes(protocol.data), b"bye")

    async def test_paused_reading_reads_nothing_until_resumed(self) -> None:
        self.on_made = lambda transport: transport.pause_reading()
        sock = self.client()
        sock.sendall(b"held")
        protocol = await self.accepted()
        await asyncio.sleep(0.05)
        self.assertNotIn("data", protocol.events)
        assert protocol.transport is not None
        self.assertFalse(protocol.transport.is_reading())
        protocol.transport.resume_reading()
        await until(lambda: protocol.data == b"held", "the data after resuming", WAIT_S)

    async def test_a_reset_by_the_client_is_connection_lost_with_the_error(self) -> None:
        sock = self.client()
        protocol = await self.accepted()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # linger 0: a reset
        assert protocol.transport is not None
        exc = await asyncio.wait_for(protocol.lost, 5)
        if exc is not None:  # the reset may also be read as a plain end, depending on timing
            self.assertIsInstance(exc, ConnectionError)
        self.assertEqual(protocol.events.count("lost"), 1)

    async def test_a_host_name_is_resolved_and_each_address_listened_on(self) -> None:
        listener = await Listener.open("localhost", 0, lambda: Recorder())
        try:
            self.assertTrue(listener.sockets)
            for sock in listener.sockets:
                host, port = sock.getsockname()[:2]
                with socket.create_connection((host, port), timeout=5):
                    pass
        finally:
            listener.close()

    async def test_close_stops_accepting(self) -> None:
        self.listener.close()
        with self.assertRaises(OSError):
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    data = bytearray()
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
    except ConnectionResetError:
        pass
    return bytes(data)


class OutOfFileDescriptors(unittest.TestCase):
    def test_the_listener_waits_and_accepts_again(self) -> None:
        # A server process with room for a few sockets only: past it, accept
        # fails with EMFILE. It must not spin or stop; once connections end,
        # it serves again.
        script = textwrap.dedent(
            """
            import asyncio, resource, sys
            from pyworker.http import HTTPServer, Response, get

            async def ok(request):
                return Response(b"ok")

            async def main():
                server = HTTPServer([get("/", ok)])
                await server.start("127.0.0.1", 0)
                import os
                used = len(os.listdir("/proc/self/fd"))
                resource.setrlimit(resource.RLIMIT_NOFILE, (used + 3, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
                print(server.port, flush=True)
                await asyncio.sleep(30)

            asyncio.run(main())
            """
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.addCleanup(proc.kill)
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(8)]
        time.sleep(0.3)
        for sock in held:
            sock.close()
        time.sleep(1.5)  # the listener's pause
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            answer = read_all(sock)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer[:100])
        self.assertLess(time.monotonic() - start, 3)
        proc.kill()
        _, err = proc.communicate(timeout=5)
        self.assertIn("cannot accept connections (Too many open files)", err)


if __name__ == "__main__":
    unittest.main()
