"""API keys: UNAUTHENTICATED without a valid key; sessions are scoped to the key that made them."""

import os
import tempfile
import unittest

import grpc

from funnel.v1 import inference_pb2 as pb
from funnel_harness import FunnelServer, bearer, error_code, greedy
from funnel_testing import health_pb2, health_pb2_grpc

KEYS = "# team keys\n\nkey-alice\n  key-bob  \n"


class AuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.keydir = tempfile.TemporaryDirectory(prefix="funnel-keys-")
        path = os.path.join(cls.keydir.name, "keys")
        with open(path, "w") as f:
            f.write(KEYS)
        cls.server = FunnelServer("--api-key-file", path)
        cls.server.start()
        cls.stub = cls.server.stub

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()
        cls.keydir.cleanup()

    def test_missing_or_wrong_key_is_unauthenticated(self):
        req = pb.GenerateRequest(prompt="Once", sampling=greedy(2))
        for metadata in [None, bearer("key-eve"), (("authorization", "key-alice"),),
                         (("authorization", "Basic a2V5LWFsaWNl"),), bearer("")]:
            code = error_code(lambda: self.stub.Generate(req, metadata=metadata, timeout=10))
            self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED, metadata)
        for call in [lambda: self.stub.ListModels(pb.ListModelsRequest(), timeout=10),
                     lambda: self.stub.ListSessions(pb.ListSessionsRequest(), timeout=10),
                     lambda: self.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10),
                     lambda: self.stub.Cancel(pb.CancelRequest(request_id="x"), timeout=10),
                     lambda: self.stub.CreateSession(pb.CreateSessionRequest(prompt="x"),
                                                     timeout=10)]:
            self.assertEqual(error_code(call), grpc.StatusCode.UNAUTHENTICATED)
        rejected = self.server.metrics()[
            'funnel:request_rejections_total{reason="unauthenticated"}']
        self.assertGreaterEqual(rejected, 5)

    def test_valid_keys_work_and_the_health_service_stays_open(self):
        for key in ["key-alice", "key-bob"]:
            deltas, final = self.server.generate(
                pb.GenerateRequest(prompt="Once", sampling=greedy(3)), metadata=bearer(key))
            self.assertEqual(len(deltas), 3)
        # "bearer" is case-insensitive.
        self.stub.ListModels(pb.ListModelsRequest(), timeout=10,
                             metadata=(("authorization", "bearer key-bob"),))
        health = health_pb2_grpc.HealthStub(self.server.channel)
        r = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        self.assertEqual(r.status, health_pb2.HealthCheckResponse.SERVING)

    def test_sessions_are_scoped_per_key(self):
        alice, bob = bearer("key-alice"), bearer("key-bob")
        s = self.stub.CreateSession(pb.CreateSessionRequest(prompt="Once upon a time"),
                                    metadata=alice, timeout=30)
        sid = s.session_id
        self.assertEqual(self.stub.GetSession(pb.GetSessionRequest(session_id=sid),
                                              metadata=alice, timeout=10).session_id, sid)
        self.assertNotIn(sid, [x.session_id for x in self.stub.ListSessions(
            pb.ListSessionsRequest(), metadata=bob, timeout=10).sessions])
        for call in [
                lambda: self.stub.GetSession(pb.GetSessionRequest(session_id=sid), metadata=bob,
                                             timeout=10),
                lambda: self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid),
                                                metadata=bob, timeout=10),
                lambda: self.stub.Generate(pb.GenerateRequest(
                    session_id=sid, prompt=" Hi", sampling=greedy(2)), metadata=bob,
                    timeout=10)]:
            self.assertEqual(error_code(call), grpc.StatusCode.NOT_FOUND)
        deltas, _ = self.server.generate(pb.GenerateRequest(
            session_id=sid, prompt=" Hi", sampling=greedy(2)), metadata=alice)
        self.assertEqual(len(deltas), 2)
        self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=sid), metadata=alice,
                                timeout=10)

    def test_requests_cannot_be_cancelled_by_another_key(self):
        alice, bob = bearer("key-alice"), bearer("key-bob")
        stream = self.stub.Generate(pb.GenerateRequest(
            request_id="alice-1", prompt="Once", sampling=greedy(2000)), metadata=alice,
            timeout=60)
        next(stream)
        self.assertEqual(error_code(lambda: self.stub.Cancel(
            pb.CancelRequest(request_id="alice-1"), metadata=bob, timeout=10)),
            grpc.StatusCode.NOT_FOUND)
        self.stub.Cancel(pb.CancelRequest(request_id="alice-1"), metadata=alice, timeout=10)
        self.assertEqual(error_code(lambda: stream), grpc.StatusCode.CANCELLED)


class KeyFileTest(unittest.TestCase):
    def test_unusable_key_file_exits_2(self):
        with tempfile.TemporaryDirectory() as d:
            empty = os.path.join(d, "empty")
            with open(empty, "w") as f:
                f.write("# nothing\n\n")
            for path in [empty, os.path.join(d, "missing")]:
                server = FunnelServer("--api-key-file", path)
                with self.assertRaises(AssertionError):
                    server.start()
                self.assertEqual(server.proc.returncode, 2)


if __name__ == "__main__":
    unittest.main()
