"""Cancel RPC, client disconnect and queue limits: freed KV blocks are observed on /metrics."""

import threading
import unittest

import grpc

from funnel.v1 import inference_pb2 as pb
from funnel.v1 import inference_pb2_grpc as pb_grpc
from funnel_harness import KV_USAGE, FunnelServer, greedy

# ~2000 tokens take seconds on stories260K: long enough to act mid-stream.
LONG = 2000


def long_request(**fields):
    return pb.GenerateRequest(prompt="Once upon a time", sampling=greedy(LONG), **fields)


class CancelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # A small pool, so one long request holds a visible fraction of it.
        cls.server = FunnelServer("--kv-cache-bytes", "4M")
        cls.server.start()
        cls.stub = cls.server.stub
        cls.idle = cls.server.metrics()[KV_USAGE]

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()

    def assert_blocks_return_to_idle(self):
        self.server.wait_metric(KV_USAGE, lambda v: v == self.idle, timeout_s=20)
        self.server.wait_metric("funnel:num_requests_running", lambda v: v == 0)

    def test_cancel_rpc_mid_stream_frees_all_blocks(self):
        stream = self.stub.Generate(long_request(request_id="to-cancel"), timeout=60)
        received = 0
        for msg in stream:
            received += 1
            if received == 5:
                break
        self.assertGreater(self.server.metrics()[KV_USAGE], self.idle)
        self.stub.Cancel(pb.CancelRequest(request_id="to-cancel"), timeout=10)
        with self.assertRaises(grpc.RpcError) as e:
            for msg in stream:
                received += 1
        self.assertEqual(e.exception.code(), grpc.StatusCode.CANCELLED)
        self.assertLess(received, LONG)
        self.assert_blocks_return_to_idle()
        # The id is gone now.
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.Cancel(pb.CancelRequest(request_id="to-cancel"), timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_cancel_learns_the_id_from_initial_metadata(self):
        stream = self.stub.Generate(long_request(), timeout=60)
        metadata = dict(stream.initial_metadata())
        request_id = metadata["x-request-id"]
        self.stub.Cancel(pb.CancelRequest(request_id=request_id), timeout=10)
        with self.assertRaises(grpc.RpcError) as e:
            for _ in stream:
                pass
        self.assertEqual(e.exception.code(), grpc.StatusCode.CANCELLED)
        self.assert_blocks_return_to_idle()

    def test_client_disconnect_mid_stream_frees_all_blocks(self):
        stream = self.stub.Generate(long_request(), timeout=60)
        for i, _ in enumerate(stream):
            if i == 5:
                break
        self.assertGreater(self.server.metrics()[KV_USAGE], self.idle)
        stream.cancel()  # the client goes away (RST_STREAM)
        self.assert_blocks_return_to_idle()
        self.assertIn("client", self.server.read_log())

    def test_closed_channel_frees_all_blocks(self):
        channel = grpc.insecure_channel("127.0.0.1:%d" % self.server.port)
        stub = pb_grpc.InferenceStub(channel)
        stream = stub.Generate(long_request(), timeout=60)
        next(stream)
        channel.close()
        self.assert_blocks_return_to_idle()

    def test_unknown_request_id_is_not_found(self):
        with self.assertRaises(grpc.RpcError) as e:
            self.stub.Cancel(pb.CancelRequest(request_id="never-was"), timeout=10)
        self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)


class QueueLimitTest(unittest.TestCase):
    def test_queue_full_is_resource_exhausted(self):
        with FunnelServer("--max-num-seqs", "1", "--max-queue", "1") as server:
            first = server.stub.Generate(long_request(), timeout=60)
            next(first)  # running
            second = server.stub.Generate(long_request(), timeout=60)
            server.wait_metric("funnel:num_requests_waiting", lambda v: v == 1)
            with self.assertRaises(grpc.RpcError) as e:
                server.generate(long_request())
            self.assertEqual(e.exception.code(), grpc.StatusCode.RESOURCE_EXHAUSTED)
            m = server.metrics()
            self.assertGreaterEqual(
                m['funnel:request_rejections_total{reason="resource_exhausted"}'], 1)
            first.cancel()
            second.cancel()
            # Capacity returns: a short request runs to its end.
            server.wait_metric("funnel:num_requests_running", lambda v: v == 0)
            deltas, final = server.generate(pb.GenerateRequest(prompt="Once", sampling=greedy(3)))
            self.assertEqual(len(deltas), 3)

    def test_concurrent_requests_all_complete(self):
        with FunnelServer("--max-num-seqs", "4") as server:
            results = [None] * 8

            def run(i):
                results[i] = server.generate(pb.GenerateRequest(
                    prompt="Once upon a time", sampling=greedy(40)))

            threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            # Batched greedy decoding gives every request the same tokens.
            ids = [[d.token_id for d in r[0]] for r in results]
            self.assertTrue(all(x == ids[0] for x in ids))
            self.assertEqual(len(ids[0]), 40)


if __name__ == "__main__":
    unittest.main()
