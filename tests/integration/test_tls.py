"""gRPC over TLS and mutual TLS, with certificates this test makes with openssl: a CA, a server
certificate for 127.0.0.1/localhost and a client certificate. Checked with Python grpcio and with
the funnel CLI; plaintext clients and clients without a certificate are refused."""

import json
import os
import subprocess
import tempfile
import unittest

import grpc

from funnel.v1 import inference_pb2 as pb
from funnel.v1 import inference_pb2_grpc as pb_grpc
from funnel_harness import FunnelServer, greedy

FUNNEL_CLI = os.environ.get("FUNNEL_CLI")


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d):
    """ca.pem (and an unrelated other-ca.pem), server.pem/server.key (SAN 127.0.0.1, localhost),
    client.pem/client.key."""
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                "/CN=funnel-test-" + ca, "-keyout", ca + ".key", "-out", ca + ".pem", cwd=d)
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in (("server", ["-extfile", "san.ext"]), ("client", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + name, "-keyout",
                name + ".key", "-out", name + ".csr", cwd=d)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "2", "-out", name + ".pem", *ext, cwd=d)


def read(d, name):
    with open(os.path.join(d, name), "rb") as f:
        return f.read()


class TlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="funnel-tls-")
        cls.d = cls.tmp.name
        make_certs(cls.d)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.d, name)

    def call(self, channel):
        stub = pb_grpc.InferenceStub(channel)
        return stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)

    def tls_server(self, *extra):
        server = FunnelServer("--tls-cert", self.path("server.pem"), "--tls-key",
                              self.path("server.key"), *extra)
        return server

    def test_tls_serves_secure_clients_only(self):
        server = self.tls_server()
        server.start(channel_credentials=grpc.ssl_channel_credentials(read(self.d, "ca.pem")))
        try:
            self.assertGreater(server.stub.GetServerInfo(pb.GetServerInfoRequest(),
                                                         timeout=10).pool_blocks, 0)
            deltas, final = server.generate(pb.GenerateRequest(prompt_ids=pb.PromptIds(ids=[1, 403]),
                                                               sampling=greedy(5)))
            self.assertEqual(len(deltas), 5)
            with grpc.insecure_channel("127.0.0.1:%d" % server.port) as plain:
                with self.assertRaises(grpc.RpcError) as e:
                    self.call(plain)
                self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            # A client that trusts another CA refuses the server.
            with grpc.secure_channel("127.0.0.1:%d" % server.port,
                                     grpc.ssl_channel_credentials(read(self.d, "other-ca.pem"))) as c:
                with self.assertRaises(grpc.RpcError):
                    self.call(c)
            if FUNNEL_CLI:
                out = subprocess.run([FUNNEL_CLI, "generate", "--server", "127.0.0.1:%d" % server.port,
                                      "--tls-ca", self.path("ca.pem"), "--prompt-ids", "1,403",
                                      "--max-tokens", "5", "--temperature", "0", "--json"],
                                     capture_output=True, text=True, timeout=60)
                self.assertEqual(out.returncode, 0, out.stderr)
                self.assertEqual(len(json.loads(out.stdout)["output_ids"]), 5)
                out = subprocess.run([FUNNEL_CLI, "generate", "--server", "127.0.0.1:%d" % server.port,
                                      "--prompt-ids", "1,403", "--max-tokens", "5"],
                                     capture_output=True, text=True, timeout=60)
                self.assertNotEqual(out.returncode, 0)
        finally:
            server.kill()

    def test_mutual_tls_requires_a_client_certificate(self):
        server = self.tls_server("--tls-client-ca", self.path("ca.pem"))
        creds = grpc.ssl_channel_credentials(read(self.d, "ca.pem"), read(self.d, "client.key"),
                                             read(self.d, "client.pem"))
        server.start(channel_credentials=creds)
        try:
            self.assertGreater(server.stub.GetServerInfo(pb.GetServerInfoRequest(),
                                                         timeout=10).pool_blocks, 0)
            with grpc.secure_channel("127.0.0.1:%d" % server.port,
                                     grpc.ssl_channel_credentials(read(self.d, "ca.pem"))) as c:
                with self.assertRaises(grpc.RpcError):
                    self.call(c)
        finally:
            server.kill()

    def test_bad_tls_flags_exit_2(self):
        for args in (["--tls-cert", self.path("server.pem")],
                     ["--tls-cert", self.path("missing.pem"), "--tls-key", self.path("server.key")],
                     ["--tls-client-ca", self.path("ca.pem")]):
            server = FunnelServer(*args)
            with self.assertRaises(AssertionError):
                server.start()
            server.kill()


if __name__ == "__main__":
    unittest.main()
