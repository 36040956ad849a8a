"""Process lifecycle: bad flags exit 2; SIGTERM/SIGINT drain and exit 0; readiness turns off."""

import signal
import subprocess
import time
import unittest

import grpc

from funnel.v1 import inference_pb2 as pb
from funnel_harness import MODEL, FunnelServer, greedy, server_binary, wait_until


class FlagsTest(unittest.TestCase):
    def run_server(self, *args):
        return subprocess.run([server_binary()] + list(args), capture_output=True, text=True,
                              timeout=60)

    def test_bad_flags_exit_2_with_a_message(self):
        cases = [
            ([], "--model is required"),
            (["--model", MODEL, "--bogus", "1"], "unknown flag --bogus"),
            (["--model", MODEL, "--port", "70000"], "--port"),
            (["--model", MODEL, "--threads", "many"], "--threads"),
            (["--model", MODEL, "--kv-method", "magic"], "magic"),
            (["--model", MODEL, "--kv-method", "pyramidkv"], "budget"),
            (["--model", MODEL, "--kv-cache-bytes", "lots"], "--kv-cache-bytes"),
            (["--model", MODEL, "--chat-template", "vicuna"], "chatml, llama2"),
            (["--model", MODEL, "--max-num-seqs", "0"], "--max-num-seqs"),
            (["--model", MODEL, "--port", "1", "--port", "2"], "twice"),
            (["--model", MODEL, "--log-level", "loud"], "--log-level"),
        ]
        for args, message in cases:
            r = self.run_server(*args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(message, r.stderr, args)

    def test_help_exits_0(self):
        r = self.run_server("--help")
        self.assertEqual(r.returncode, 0)
        for flag in ["--model", "--port-file", "--admin-port", "--kv-method", "--api-key-file",
                     "--session-ttl", "--shutdown-grace", "--served-model-name"]:
            self.assertIn(flag, r.stdout)

    def test_missing_model_exits_1(self):
        r = self.run_server("--model", "/nonexistent.gguf", "--port", "0", "--admin-port", "-1")
        self.assertEqual(r.returncode, 1, r.stderr)


class ShutdownTest(unittest.TestCase):
    def test_sigterm_exits_0(self):
        with FunnelServer() as server:
            self.assertEqual(server.http_get("/ready")[0], 200)
            server.signal(signal.SIGTERM)
            self.assertEqual(server.wait(30), 0, server.read_log())

    def test_sigint_exits_0(self):
        with FunnelServer() as server:
            server.signal(signal.SIGINT)
            self.assertEqual(server.wait(30), 0, server.read_log())

    def test_in_flight_request_finishes_within_the_grace_period(self):
        with FunnelServer("--shutdown-grace", "30") as server:
            stream = server.stub.Generate(pb.GenerateRequest(
                prompt="Once", sampling=greedy(1000)), timeout=60)
            next(stream)
            start = time.monotonic()
            server.signal(signal.SIGTERM)
            # Readiness turns off at once, and new work is refused.
            self.assertTrue(wait_until(lambda: server.http_get("/ready")[0] != 200, 10))
            with self.assertRaises(grpc.RpcError) as e:
                server.generate(pb.GenerateRequest(prompt="Once", sampling=greedy(2)))
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            msgs = list(stream)  # the running request completes
            self.assertTrue(msgs[-1].HasField("final"))
            self.assertEqual(msgs[-1].final.usage.completion_tokens, 1000)
            self.assertEqual(server.wait(30), 0, server.read_log())
            self.assertLess(time.monotonic() - start, 30)

    def test_requests_beyond_the_grace_period_are_cancelled(self):
        with FunnelServer("--shutdown-grace", "0.2") as server:
            stream = server.stub.Generate(pb.GenerateRequest(
                prompt="Once", sampling=greedy(2000)), timeout=60)
            next(stream)
            server.signal(signal.SIGTERM)
            with self.assertRaises(grpc.RpcError) as e:
                for _ in stream:
                    pass
            self.assertIn(e.exception.code(), (grpc.StatusCode.CANCELLED,
                                               grpc.StatusCode.UNAVAILABLE))
            self.assertEqual(server.wait(30), 0, server.read_log())


if __name__ == "__main__":
    unittest.main()
