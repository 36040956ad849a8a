"""Compressed-cache sessions over gRPC: lifecycle, reuse equivalence and policy memory."""

import math
import unittest

import grpc

from funnel.v1 import inference_pb2 as pb
from funnel_harness import KV_USAGE, FunnelServer, error_code, greedy, wait_until

NUM_LAYERS = 5  # stories260K


def pyramid_stored(n, budget, window, num_layers, beta=20.0):
    """Entries each layer stores for an n-token prompt under pyramidkv with exact rounding,
    written from DESIGN.md section 5 / pyramidkv-reference.md section 1 (not from the code)."""
    k = budget - window
    if n < budget:
        return [n] * num_layers
    if n < 2 * k:
        return [k + window] * num_layers
    lo = k / beta
    hi = 2 * k - lo
    if hi >= n - window:
        hi = n - window
        lo = 2 * k - hi
    values = [hi - layer * (hi - lo) / (num_layers - 1) for layer in range(num_layers)]
    counts = [math.floor(v) for v in values]
    left = num_layers * k - sum(counts)
    # Largest remainders get the missing units (ties: the lower layer).
    order = sorted(range(num_layers), key=lambda i: (-(values[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    return [c + window for c in counts]


class SessionTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = FunnelServer("--kv-cache-bytes", "8M")
        cls.server.start()
        cls.stub = cls.server.stub
        info = cls.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
        cls.block_size = info.block_size
        cls.block_bytes = info.pool_bytes // info.pool_blocks
        cls.pool_blocks = info.pool_blocks
        # A natural 200-token context: BOS + the model's own greedy story.
        ids, _ = cls.server.greedy_ids([1], 199)
        cls.context = [1] + ids

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()

    def create(self, method, budget=0, ids=None, **fields):
        policy = pb.KvPolicy(method=method, budget=budget)
        return self.stub.CreateSession(pb.CreateSessionRequest(
            prompt_ids=pb.PromptIds(ids=ids or self.context), kv_policy=policy, **fields),
            timeout=60)

    def test_lifecycle_and_not_found(self):
        s = self.create(pb.KV_METHOD_FULL, ttl_seconds=600)
        self.assertTrue(s.session_id)
        self.assertEqual(s.tokens, len(self.context))
        self.assertEqual(list(s.per_layer_tokens), [len(self.context)] * NUM_LAYERS)
        self.assertGreater(s.expires_unix_ms, s.created_unix_ms)
        got = self.stub.GetSession(pb.GetSessionRequest(session_id=s.session_id), timeout=10)
        self.assertEqual(got.session_id, s.session_id)
        self.assertEqual(got.tokens, s.tokens)
        listed = self.stub.ListSessions(pb.ListSessionsRequest(), timeout=10).sessions
        self.assertIn(s.session_id, [x.session_id for x in listed])
        self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=s.session_id), timeout=10)
        for call in [
                lambda: self.stub.GetSession(pb.GetSessionRequest(session_id=s.session_id),
                                             timeout=10),
                lambda: self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=s.session_id),
                                                timeout=10),
                lambda: self.stub.GetSession(pb.GetSessionRequest(session_id="sess-r0-nope"),
                                             timeout=10),
                lambda: self.stub.Generate(pb.GenerateRequest(
                    session_id="sess-r0-nope", prompt=" Hi", sampling=greedy(2)), timeout=10)]:
            self.assertEqual(error_code(call), grpc.StatusCode.NOT_FOUND)

    def test_reuse_matches_one_shot_full_run(self):
        s = self.create(pb.KV_METHOD_FULL)
        try:
            question = " Where did Lily go?"
            deltas, final = self.server.generate(pb.GenerateRequest(
                session_id=s.session_id, prompt=question, sampling=greedy(24)))
            session_tokens = [d.token_id for d in deltas]
            suffix = list(final.prompt_ids)
            self.assertTrue(suffix)
            self.assertNotEqual(suffix[0], 1)  # a continuation: no BOS
            self.assertEqual(final.usage.session_tokens_reused, len(self.context))
            self.assertEqual(final.usage.prompt_tokens, len(suffix))
            one_shot, _ = self.server.greedy_ids(
                self.context + suffix, 24, kv_policy=pb.KvPolicy(method=pb.KV_METHOD_FULL))
            self.assertEqual(session_tokens, one_shot)
            # The session is unchanged by the question: asking again gives the same answer.
            again, _ = self.server.generate(pb.GenerateRequest(
                session_id=s.session_id, prompt=question, sampling=greedy(24)))
            self.assertEqual([d.token_id for d in again], session_tokens)
        finally:
            self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=s.session_id), timeout=10)

    def get(self, session_id):
        return self.stub.GetSession(pb.GetSessionRequest(session_id=session_id), timeout=10)

    def full_one_shot(self, ids, max_tokens):
        tokens, _ = self.server.greedy_ids(ids, max_tokens,
                                           kv_policy=pb.KvPolicy(method=pb.KV_METHOD_FULL))
        return tokens

    def full_session_bytes(self, tokens):
        return NUM_LAYERS * math.ceil(tokens / self.block_size) * self.block_bytes

    def test_append_extends_the_session_with_the_turn(self):
        idle = self.server.metrics()[KV_USAGE]
        s = self.create(pb.KV_METHOD_FULL)
        try:
            self.assertEqual(s.kv_bytes, self.full_session_bytes(len(self.context)))
            history = list(self.context)
            for turn, n in [(" Lily went to the park.", 12), (" Then she saw a dog.", 7)]:
                reused = len(history)
                deltas, final = self.server.generate(pb.GenerateRequest(
                    session_id=s.session_id, session_mode=pb.SESSION_MODE_APPEND, prompt=turn,
                    sampling=greedy(n)))
                suffix = list(final.prompt_ids)
                completion = [d.token_id for d in deltas]
                self.assertTrue(suffix)
                self.assertNotEqual(suffix[0], 1)  # a continuation: no BOS
                self.assertEqual(len(completion), n)
                self.assertEqual(final.usage.session_tokens_reused, reused)
                self.assertEqual(final.usage.prompt_tokens, len(suffix))
                self.assertEqual(final.usage.completion_tokens, n)
                # The turn generates what the one-shot run of the history + turn does ...
                self.assertEqual(completion, self.full_one_shot(history + suffix, n))
                # ... and the session now holds the whole turn, the last token included.
                history += suffix + completion
                got = self.get(s.session_id)
                self.assertEqual(got.tokens, len(history))
                self.assertEqual(list(got.per_layer_tokens), [len(history)] * NUM_LAYERS)
                self.assertEqual(got.kv_bytes, self.full_session_bytes(len(history)))
                self.assertEqual(got.active_requests, 0)
            # A question forks the extended session: the one-shot run of all of it + the question.
            question = " Where did Lily go?"
            deltas, final = self.server.generate(pb.GenerateRequest(
                session_id=s.session_id, prompt=question, sampling=greedy(24)))
            self.assertEqual(final.usage.session_tokens_reused, len(history))
            self.assertEqual([d.token_id for d in deltas],
                             self.full_one_shot(history + list(final.prompt_ids), 24))
            self.assertEqual(self.get(s.session_id).tokens, len(history))  # forks change nothing
        finally:
            self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=s.session_id), timeout=10)
        self.server.wait_metric(KV_USAGE, lambda v: v == idle)

    def test_one_append_at_a_time_and_a_cancelled_append_changes_nothing(self):
        s = self.create(pb.KV_METHOD_FULL)
        try:
            # ~1500 tokens take most of a second: the append is still running below.
            stream = self.stub.Generate(pb.GenerateRequest(
                session_id=s.session_id, session_mode=pb.SESSION_MODE_APPEND, prompt=" And then",
                sampling=greedy(1500)), timeout=60)
            next(stream)
            second = pb.GenerateRequest(session_id=s.session_id,
                                        session_mode=pb.SESSION_MODE_APPEND, prompt=" x",
                                        sampling=greedy(2))
            self.assertEqual(error_code(lambda: self.stub.Generate(second, timeout=30)),
                             grpc.StatusCode.FAILED_PRECONDITION)
            stream.cancel()
            self.assertTrue(wait_until(lambda: self.get(s.session_id).active_requests == 0, 20))
            got = self.get(s.session_id)
            self.assertEqual(got.tokens, len(self.context))
            self.assertEqual(got.kv_bytes, self.full_session_bytes(len(self.context)))
            # The session is usable again, for appends too.
            deltas, final = self.server.generate(pb.GenerateRequest(
                session_id=s.session_id, session_mode=pb.SESSION_MODE_APPEND, prompt=" x",
                sampling=greedy(2)))
            self.assertEqual(self.get(s.session_id).tokens,
                             len(self.context) + len(final.prompt_ids) + 2)
        finally:
            self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=s.session_id), timeout=10)

    def test_pyramidkv_session_uses_the_memory_its_policy_says(self):
        idle = self.server.metrics()[KV_USAGE]
        budget, window = 40, 8
        s = self.create(pb.KV_METHOD_PYRAMIDKV, budget=budget)
        try:
            expected = pyramid_stored(len(self.context), budget, window, NUM_LAYERS)
            self.assertEqual(sum(expected), NUM_LAYERS * budget)
            self.assertEqual(list(s.per_layer_tokens), expected)
            self.assertEqual(s.tokens, len(self.context))  # logical length is unchanged
            self.assertEqual(s.kv_policy.method, pb.KV_METHOD_PYRAMIDKV)
            self.assertEqual(s.kv_policy.budget, budget)
            blocks = sum(math.ceil(t / self.block_size) for t in expected)
            self.assertEqual(s.kv_bytes, blocks * self.block_bytes)
            usage = self.server.metrics()[KV_USAGE]
            self.assertAlmostEqual(usage - idle, blocks / self.pool_blocks, places=9)
            self.assertEqual(self.server.metrics()["funnel:num_sessions"], 1)
            self.assertLess(self.server.metrics()["funnel:kv_cache_compression_ratio"], 1.0)
            deltas, final = self.server.generate(pb.GenerateRequest(
                session_id=s.session_id, prompt=" The end.", sampling=greedy(8)))
            self.assertEqual(len(deltas), 8)
        finally:
            self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=s.session_id), timeout=10)
        self.server.wait_metric(KV_USAGE, lambda v: v == idle)

    def test_session_from_text_and_chat_messages(self):
        s = self.stub.CreateSession(pb.CreateSessionRequest(prompt="Once upon a time"),
                                    timeout=60)
        self.assertEqual(s.tokens, 5)  # BOS + 4 (the reference ids)
        self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=s.session_id), timeout=10)
        msgs = pb.ChatMessages(messages=[pb.ChatMessage(role="system", content="Be short.")])
        s = self.stub.CreateSession(pb.CreateSessionRequest(messages=msgs), timeout=60)
        deltas, final = self.server.generate(pb.GenerateRequest(
            session_id=s.session_id, sampling=greedy(4),
            messages=pb.ChatMessages(messages=[pb.ChatMessage(role="user", content="Hi")])))
        self.assertEqual(len(deltas), 4)
        self.assertNotEqual(final.prompt_ids[0], 1)  # continuation: no BOS
        self.stub.DeleteSession(pb.DeleteSessionRequest(session_id=s.session_id), timeout=10)

    def test_bad_session_requests(self):
        for req in [pb.CreateSessionRequest(),
                    pb.CreateSessionRequest(prompt="x", ttl_seconds=-1),
                    pb.CreateSessionRequest(prompt_ids=pb.PromptIds(ids=[1, 100000])),
                    pb.CreateSessionRequest(prompt="x", kv_policy=pb.KvPolicy(
                        method=pb.KV_METHOD_SNAPKV))]:
            self.assertEqual(error_code(lambda: self.stub.CreateSession(req, timeout=30)),
                             grpc.StatusCode.INVALID_ARGUMENT, str(req))


if __name__ == "__main__":
    unittest.main()
