"""Fault and load tests against a real funnel-server (issue: deployment and reliability).

- A mixed soak: a fixed number of requests from concurrent clients (greedy and sampled streams,
  cancels, client disconnects mid-stream, session create / use / delete, malformed requests,
  oversize prompts). Afterwards: the server is alive, every KV block is back in the pool, resident
  memory did not grow beyond a bound after warm-up, and every error is of the kind its request
  asked for.
- kill -9 under load: every client call ends promptly with an error (nothing hangs), and a
  restarted server with the same --session-dir has the sessions back.

FUNNEL_SOAK_REQUESTS sets the soak size (default 1000, the CI size). Figures are printed.
"""

import collections
import os
import random
import signal
import tempfile
import threading
import time
import unittest

import grpc

from funnel.v1 import inference_pb2 as pb
from funnel.v1 import inference_pb2_grpc as pb_grpc
from funnel_harness import KV_USAGE, FunnelServer, greedy, wait_until

REQUESTS = int(os.environ.get("FUNNEL_SOAK_REQUESTS", "1000"))
CONCURRENCY = 8


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Soak:
    """Runs one kind of request per call; records (kind, outcome)."""

    def __init__(self, server, context_ids, seed):
        self.server = server
        self.target = "127.0.0.1:%d" % server.port
        self.stub = server.stub
        self.context = context_ids
        self.rng = random.Random(seed)
        self.outcomes = collections.Counter()
        self.unexpected = []

    def record(self, kind, outcome, expected):
        self.outcomes[(kind, outcome)] += 1
        if outcome not in expected:
            self.unexpected.append((kind, outcome))

    def stream(self):
        sampling = greedy(self.rng.randint(1, 24)) if self.rng.random() < 0.5 else pb.SamplingParams(
            temperature=0.8, top_p=0.9, max_tokens=self.rng.randint(1, 24), seed=self.rng.randint(0, 99))
        policy = self.rng.choice([None, pb.KvPolicy(method=pb.KV_METHOD_PYRAMIDKV, budget=32),
                                  pb.KvPolicy(method=pb.KV_METHOD_SNAPKV, budget=24)])
        n = self.rng.randint(1, len(self.context))
        req = pb.GenerateRequest(prompt_ids=pb.PromptIds(ids=self.context[:n]), sampling=sampling)
        if policy is not None:
            req.kv_policy.CopyFrom(policy)
        try:
            _, final = self.server.generate(req, timeout=60)
            self.record("stream", "ok" if final is not None else "no-final", {"ok"})
        except grpc.RpcError as e:
            self.record("stream", e.code().name, {"RESOURCE_EXHAUSTED"})

    def cancel(self):
        call = self.stub.Generate(pb.GenerateRequest(prompt_ids=pb.PromptIds(ids=self.context[:50]),
                                                     sampling=greedy(200)), timeout=60)
        try:
            for i, _ in enumerate(call):
                if i == 2:
                    call.cancel()
            self.record("cancel", "finished", {"finished"})
        except grpc.RpcError as e:
            self.record("cancel", e.code().name, {"CANCELLED", "RESOURCE_EXHAUSTED"})

    def disconnect(self):
        channel = grpc.insecure_channel(self.target)
        stub = pb_grpc.InferenceStub(channel)
        call = stub.Generate(pb.GenerateRequest(prompt_ids=pb.PromptIds(ids=self.context[:80]),
                                                sampling=greedy(200)), timeout=60)
        try:
            next(call)
            self.record("disconnect", "closed", {"closed"})
        except grpc.RpcError as e:
            self.record("disconnect", e.code().name, {"RESOURCE_EXHAUSTED"})
        channel.close()  # the server sees the client go away mid-stream

    def session(self):
        try:
            s = self.stub.CreateSession(pb.CreateSessionRequest(
                prompt_ids=pb.PromptIds(ids=self.context[:self.rng.randint(40, len(self.context))]),
                kv_policy=pb.KvPolicy(method=pb.KV_METHOD_PYRAMIDKV, budget=32)), timeout=60)
        except grpc.RpcError as e:
            self.record("session", e.code().name, {"RESOURCE_EXHAUSTED"})
            return
        try:
            for _ in range(self.rng.randint(1, 3)):
                self.server.generate(pb.GenerateRequest(session_id=s.session_id, prompt=" and then",
                                                        sampling=greedy(8)), timeout=60)
            self.record("session", "ok", {"ok"})
        except grpc.RpcError as e:
            self.record("session", e.code().name, {"RESOURCE_EXHAUSTED"})
        finally:
            self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=s.session_id), timeout=60)

    def malformed(self):
        bad = self.rng.choice([
            pb.GenerateRequest(),  # no input
            pb.GenerateRequest(prompt_ids=pb.PromptIds(ids=[1, 99999])),
            pb.GenerateRequest(prompt="hi", sampling=pb.SamplingParams(top_p=7)),
            pb.GenerateRequest(prompt="hi", kv_policy=pb.KvPolicy(method=pb.KV_METHOD_SNAPKV)),
            pb.GenerateRequest(prompt="hi", session_id="sess-nope-0000000000000000"),
        ])
        try:
            self.server.generate(bad, timeout=30)
            self.record("malformed", "ok", set())
        except grpc.RpcError as e:
            self.record("malformed", e.code().name, {"INVALID_ARGUMENT", "NOT_FOUND"})

    def oversize(self):
        try:
            self.server.generate(pb.GenerateRequest(prompt_ids=pb.PromptIds(ids=[5] * 5000),
                                                    sampling=greedy(4)), timeout=30)
            self.record("oversize", "ok", set())
        except grpc.RpcError as e:
            self.record("oversize", e.code().name, {"INVALID_ARGUMENT"})

    def run_one(self):
        kind = self.rng.choices(
            [self.stream, self.cancel, self.disconnect, self.session, self.malformed, self.oversize],
            weights=[8, 2, 2, 2, 2, 1])[0]
        kind()


def run_load(server, context, count, workers):
    soaks = [Soak(server, context, seed) for seed in range(workers)]
    counter = iter(range(count))
    lock = threading.Lock()

    def worker(s):
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            s.run_one()

    threads = [threading.Thread(target=worker, args=(s,)) for s in soaks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
        assert not t.is_alive(), "a soak worker hung"
    total = collections.Counter()
    unexpected = []
    for s in soaks:
        total.update(s.outcomes)
        unexpected += s.unexpected
    return total, unexpected


class SoakTest(unittest.TestCase):
    def test_mixed_soak(self):
        with FunnelServer("--kv-cache-bytes", "16M", "--max-queue", "64") as server:
            context, _ = server.greedy_ids([1], 199)
            context = [1] + context
            idle = server.metrics()[KV_USAGE]
            run_load(server, context, 40, CONCURRENCY)  # warm-up: allocator and thread pools
            server.wait_metric(KV_USAGE, lambda v: v == idle, timeout_s=30)
            rss_before = rss_kb(server.proc.pid)
            t0 = time.monotonic()
            outcomes, unexpected = run_load(server, context, REQUESTS, CONCURRENCY)
            elapsed = time.monotonic() - t0
            self.assertIsNone(server.proc.poll(), "the server crashed:\n" + server.read_log())
            server.wait_metric(KV_USAGE, lambda v: v == idle, timeout_s=30)
            sessions = server.stub.ListSessions(pb.ListSessionsRequest(), timeout=10).sessions
            rss_after = rss_kb(server.proc.pid)
            print("\nsoak: %d requests in %.1f s with %d clients; outcomes %s; KV usage %.4f -> %.4f; "
                  "RSS %d -> %d KiB" % (REQUESTS, elapsed, CONCURRENCY, dict(sorted(outcomes.items())),
                                         idle, server.metrics()[KV_USAGE], rss_before, rss_after))
            self.assertEqual(unexpected, [])
            self.assertEqual(sum(outcomes.values()), REQUESTS)
            self.assertEqual(len(sessions), 0)
            # Flat: no growth beyond allocator noise after warm-up.
            self.assertLess(rss_after - rss_before, 32 * 1024)
            status, _ = server.http_get("/ready")
            self.assertEqual(status, 200)

    def test_kill9_under_load_fails_clients_promptly_and_sessions_come_back(self):
        with tempfile.TemporaryDirectory(prefix="funnel-soak-sessions-") as d:
            args = ("--session-dir", d, "--replica-id", "soak")
            with FunnelServer(*args) as server:
                context, _ = server.greedy_ids([1], 120)
                s = server.stub.CreateSession(pb.CreateSessionRequest(
                    prompt_ids=pb.PromptIds(ids=[1] + context),
                    kv_policy=pb.KvPolicy(method=pb.KV_METHOD_PYRAMIDKV, budget=32)), timeout=60)
                deltas, _ = server.generate(pb.GenerateRequest(session_id=s.session_id,
                                                               prompt=" The cat", sampling=greedy(12)))
                answer = [d.token_id for d in deltas]
                ended = []

                def client():
                    try:
                        server.generate(pb.GenerateRequest(prompt_ids=pb.PromptIds(ids=[1] + context),
                                                           sampling=greedy(2000)), timeout=120)
                        ended.append(("ok", time.monotonic()))
                    except grpc.RpcError as e:
                        ended.append((e.code().name, time.monotonic()))

                threads = [threading.Thread(target=client) for _ in range(6)]
                for t in threads:
                    t.start()
                wait_until(lambda: server.metrics().get("funnel:num_requests_running", 0) > 0, 20)
                killed_at = time.monotonic()
                server.proc.send_signal(signal.SIGKILL)
                for t in threads:
                    t.join(timeout=30)
                    self.assertFalse(t.is_alive(), "a client hung after kill -9")
                codes = collections.Counter(code for code, _ in ended)
                self.assertEqual(codes.get("UNAVAILABLE", 0) + codes.get("CANCELLED", 0), 6, codes)
                slowest = max(at - killed_at for code, at in ended)
                print("\nkill -9: %d clients ended %s, the last %.2f s after the kill"
                      % (len(ended), dict(codes), slowest))
                self.assertLess(slowest, 10.0)
                server.proc.wait(timeout=15)
            with FunnelServer(*args) as server:
                got = server.stub.GetSession(pb.GetSessionRequest(session_id=s.session_id), timeout=10)
                self.assertEqual(list(got.per_layer_tokens), list(s.per_layer_tokens))
                deltas, _ = server.generate(pb.GenerateRequest(session_id=s.session_id,
                                                               prompt=" The cat", sampling=greedy(12)))
                self.assertEqual([d.token_id for d in deltas], answer)


if __name__ == "__main__":
    unittest.main()
