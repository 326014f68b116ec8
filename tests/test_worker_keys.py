"""The public key: 401 with a reason until it is loaded, the failure reported, then signed requests pass."""

from __future__ import annotations

import asyncio
import json
import unittest
from typing import Any

from pyworker import Backend, post
from pyworker.auth import Scheme, signed_message
from pyworker.config import WorkerConfig
from pyworker.dev.autoscaler import StandInAutoscaler
from pyworker.dev.rsa_keys import RSAKeyPair
from pyworker.http import HTTPServer, Request, Response, get, json_response
from pyworker.worker import Worker
from tests.support import ModelProcess, body, post_bytes, read_response
from workers.hello_world.server import GenerateHandler


class KeyFetch(unittest.IsolatedAsyncioTestCase):
    model: ModelProcess
    pair: RSAKeyPair

    @classmethod
    def setUpClass(cls) -> None:
        cls.model = ModelProcess()
        cls.pair = RSAKeyPair.generate(2048)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.model.stop()

    async def test_key_failure_is_reported_and_requests_wait_for_the_key(self) -> None:
        scaler = StandInAutoscaler(self.pair)
        self.key_available = False

        async def pubkey(request: Request) -> Response:
            if not self.key_available:
                return json_response({"error": "maintenance"}, status=503)
            return await scaler.pubkey(request)

        server = HTTPServer(
            [
                get("/pubkey/", pubkey),
                post("/route/", scaler.route),
                post("/worker_status/", scaler.worker_status),
                post("/delete_requests/", scaler.delete_requests),
            ]
        )
        await server.start("127.0.0.1", 0)
        self.addAsyncCleanup(server.shutdown, 0.1)

        backend = Backend(model_server_url=self.model.url)
        routes = [post("/generate", backend.create_handler(GenerateHandler()))]
        env = {
            "WORKER_HOST": "127.0.0.1",
            "WORKER_PORT": "0",
            "MODEL_LOG": self.model.log,
            "REPORT_ADDR": f"http://127.0.0.1:{server.port}",
            "CONTAINER_ID": "3",
            "PUBLIC_IPADDR": "127.0.0.1",
            "VAST_TCP_PORT_0": "0",
            "PYWORKER_CHECK_URL": "false",
        }
        worker = Worker(backend, routes, WorkerConfig.from_env(env))
        await worker.start()
        self.addAsyncCleanup(worker.stop)

        async def send(auth: dict[str, Any]) -> tuple[int, bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", worker.port)
            data = json.dumps({"auth_data": auth, "payload": {"prompt": "hi"}}).encode() if auth else body("hi")
            writer.write(post_bytes("/generate", data))
            status, _, answer = await read_response(reader)
            writer.close()
            return status, answer

        status, answer = await send({})
        self.assertEqual(status, 401)
        self.assertIn(b"not loaded yet", answer)
        for _ in range(100):
            if "public key" in worker.status.error_msg:
                break
            await asyncio.sleep(0.05)
        self.assertIn("cannot fetch the autoscaler's public key", worker.status.error_msg)
        self.assertIn("503", worker.status.error_msg)
        for _ in range(100):  # the reports carry it
            if any("public key" in (s.get("error_msg") or "") for s in scaler.workers.values()):
                break
            await asyncio.sleep(0.05)
        self.assertTrue(any("public key" in (s.get("error_msg") or "") for s in scaler.workers.values()))

        self.key_available = True
        for _ in range(100):  # back-off: 1 s, then 2 s
            if backend.signatures is not None and backend.signatures.key is not None:
                break
            await asyncio.sleep(0.05)
        self.assertNotIn("public key", worker.status.error_msg)
        auth: dict[str, Any] = {"cost": "1", "endpoint": "e", "reqnum": 1, "request_idx": 1, "url": "http://w:1"}
        auth["signature"] = self.pair.sign_b64(signed_message(auth, Scheme.URL))
        status, answer = await send(auth)
        self.assertEqual(status, 200, answer)
        status, answer = await send(dict(auth, url="http://w:2"))
        self.assertEqual(status, 401, answer)


if __name__ == "__main__":
    unittest.main()
