"""Durable sessions (--session-dir): a restarted server answers a session question with the same
greedy tokens, after a graceful stop and after kill -9; deleted sessions stay deleted."""

import os
import signal
import tempfile
import unittest

from funnel.v1 import inference_pb2 as pb
from funnel_harness import FunnelServer, error_code, greedy

import grpc


class DurableSessionTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory(prefix="funnel-sessions-")
        self.args = ("--session-dir", self.dir.name, "--replica-id", "pod-0")

    def tearDown(self):
        self.dir.cleanup()

    def ask(self, server, session_id):
        deltas, final = server.generate(pb.GenerateRequest(
            session_id=session_id, prompt=" The little dog", sampling=greedy(16)))
        self.assertIsNotNone(final)
        return [d.token_id for d in deltas]

    def files(self):
        return sorted(f for f in os.listdir(self.dir.name) if f.endswith(".session"))

    def test_sessions_survive_sigterm_and_kill9(self):
        with FunnelServer(*self.args) as server:
            ids, _ = server.greedy_ids([1], 150)
            pyr = server.stub.CreateSession(pb.CreateSessionRequest(
                prompt_ids=pb.PromptIds(ids=[1] + ids),
                kv_policy=pb.KvPolicy(method=pb.KV_METHOD_PYRAMIDKV, budget=32)), timeout=60)
            full = server.stub.CreateSession(pb.CreateSessionRequest(
                prompt_ids=pb.PromptIds(ids=[1] + ids[:60])), timeout=60)
            gone = server.stub.CreateSession(pb.CreateSessionRequest(
                prompt_ids=pb.PromptIds(ids=[1] + ids[:20])), timeout=60)
            server.stub.DeleteSession(pb.DeleteSessionRequest(session_id=gone.session_id),
                                      timeout=10)
            before = {s.session_id: self.ask(server, s.session_id) for s in (pyr, full)}
            server.signal(signal.SIGTERM)
            self.assertEqual(server.wait(30), 0)
        self.assertEqual(self.files(), sorted(s.session_id + ".session" for s in (pyr, full)))

        with FunnelServer(*self.args) as server:
            listed = server.stub.ListSessions(pb.ListSessionsRequest(), timeout=10).sessions
            self.assertEqual(sorted(s.session_id for s in listed), sorted(before))
            got = server.stub.GetSession(pb.GetSessionRequest(session_id=pyr.session_id),
                                         timeout=10)
            self.assertEqual(list(got.per_layer_tokens), list(pyr.per_layer_tokens))
            self.assertEqual(got.kv_bytes, pyr.kv_bytes)
            for sid, tokens in before.items():
                self.assertEqual(self.ask(server, sid), tokens)
            self.assertEqual(error_code(lambda: server.stub.GetSession(
                pb.GetSessionRequest(session_id=gone.session_id), timeout=10)),
                grpc.StatusCode.NOT_FOUND)
            server.proc.kill()  # kill -9: no drain at all
            server.proc.wait(timeout=15)

        with FunnelServer(*self.args) as server:
            for sid, tokens in before.items():
                self.assertEqual(self.ask(server, sid), tokens)

    def test_corrupt_and_foreign_files_are_skipped(self):
        with open(os.path.join(self.dir.name, "sess-pod-0-0000000000000001.session"), "wb") as f:
            f.write(b"FUNNELSS" + os.urandom(200))
        with open(os.path.join(self.dir.name, "README"), "w") as f:
            f.write("not a session")
        with FunnelServer(*self.args) as server:
            self.assertEqual(len(server.stub.ListSessions(pb.ListSessionsRequest(),
                                                          timeout=10).sessions), 0)
            status, _ = server.http_get("/ready")
            self.assertEqual(status, 200)
            self.assertIn("skipped", server.read_log())


if __name__ == "__main__":
    unittest.main()
