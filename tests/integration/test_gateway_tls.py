"""funnel-gateway over HTTPS, and over TLS to its backends, with certificates this test makes
with openssl (test_tls.make_certs: a CA, a server certificate for 127.0.0.1/localhost, a client
certificate, an unrelated CA).

One funnel-server serves gRPC with mutual TLS; gateways in front of it serve HTTPS (optionally
with client certificates) and call it with --backend-tls-ca/--backend-tls-cert/--backend-tls-key.
Clients are Python's http.client and ssl (Debian's /usr/bin/python3)."""

import http.client
import json
import os
import signal
import ssl
import subprocess
import tempfile
import time
import unittest

import grpc

from funnel_harness import FunnelServer, read_text, shared_data, wait_until
from test_tls import make_certs, read

MODEL_NAME = "stories260K"
# llama2.c's greedy continuation of "Once upon a time" (an independent reference).
GREEDY_REFERENCE = shared_data("models/stories260K/stories260K.greedy.t0.n256.txt")
START_TIMEOUT_S = 60
HTTP_TIMEOUT_S = 20


def gateway_binary():
    path = os.environ.get("FUNNEL_GATEWAY")
    if not path or not os.path.exists(path):
        raise unittest.SkipTest("FUNNEL_GATEWAY is not set to a built funnel-gateway")
    return path


class Gateway:
    """One funnel-gateway process on 127.0.0.1 (ephemeral port, fast probes); always stopped."""

    def __init__(self, *args):
        self.dir = tempfile.TemporaryDirectory(prefix="funnel-gw-tls-")
        self.port_file = os.path.join(self.dir.name, "port")
        self.log_path = os.path.join(self.dir.name, "gateway.log")
        self.cmd = [gateway_binary(), "--host", "127.0.0.1", "--port", "0", "--port-file",
                    self.port_file, "--probe-interval", "0.2", "--max-probe-backoff", "0.5",
                    *args]
        self.proc = None
        self.port = None

    def start(self):
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        ok = wait_until(lambda: self.proc.poll() is not None or os.path.exists(self.port_file),
                        START_TIMEOUT_S)
        if not ok or self.proc.poll() is not None:
            raise AssertionError("funnel-gateway did not start:\n" + self.log())
        self.port = int(read_text(self.port_file))
        return self

    def run_to_exit(self):
        """(exit status, output) of a gateway that is expected to refuse its flags."""
        out = subprocess.run(self.cmd, capture_output=True, text=True, timeout=START_TIMEOUT_S)
        return out.returncode, out.stdout + out.stderr

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.dir.cleanup()


def request(port, method, path, body=None, context=None, timeout=HTTP_TIMEOUT_S):
    """(status, content type, body bytes) of one request; HTTPS when `context` is given."""
    if context is not None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=timeout)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers=headers)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type", ""), r.read()
    finally:
        conn.close()


def sse_events(body):
    """The JSON payloads of an SSE body, [DONE] as the string "[DONE]"."""
    events = []
    for block in body.decode().split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: "), block
        payload = block[len("data: "):]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


CHAT = {"model": MODEL_NAME, "max_tokens": 8, "temperature": 0, "ignore_eos": True,
        "messages": [{"role": "system", "content": "Tell stories."},
                     {"role": "user", "content": "A cat"}]}

# What a client sees when the TLS handshake or the connection is refused.
REFUSED = (ssl.SSLError, ConnectionError, http.client.HTTPException)


class GatewayTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="funnel-gw-certs-")
        cls.d = cls.tmp.name
        make_certs(cls.d)
        # The server requires client certificates from the test CA (mutual TLS to the gateway).
        cls.server = FunnelServer("--tls-cert", cls.path("server.pem"), "--tls-key",
                                  cls.path("server.key"), "--tls-client-ca", cls.path("ca.pem"),
                                  "--served-model-name", MODEL_NAME, "--chat-template", "chatml")
        cls.server.start(channel_credentials=grpc.ssl_channel_credentials(
            read(cls.d, "ca.pem"), read(cls.d, "client.key"), read(cls.d, "client.pem")))

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()
        cls.tmp.cleanup()

    @classmethod
    def path(cls, name):
        return os.path.join(cls.d, name)

    def context(self, ca="ca.pem", identity=None):
        """A client context trusting `ca` (host names checked), presenting `identity`."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.path(ca))
        if identity:
            ctx.load_cert_chain(self.path(identity + ".pem"), self.path(identity + ".key"))
        return ctx

    def gateway(self, *args, backend_ca="ca.pem"):
        """A started gateway serving HTTPS (server.pem) that calls the server over mutual TLS
        trusting `backend_ca` (None: plaintext gRPC); stopped at the end of the test."""
        backend = []
        if backend_ca:
            backend = ["--backend-tls-ca", self.path(backend_ca), "--backend-tls-cert",
                       self.path("client.pem"), "--backend-tls-key", self.path("client.key")]
        g = Gateway("--backend", "127.0.0.1:%d" % self.server.port,
                    "--tls-cert", self.path("server.pem"), "--tls-key", self.path("server.key"),
                    *backend, *args)
        self.addCleanup(g.stop)
        return g.start()

    def wait_healthy(self, g, context):
        def healthy():
            try:
                return request(g.port, "GET", "/health", context=context)[0] == 200
            except REFUSED + (OSError,):
                return False
        if not wait_until(healthy, START_TIMEOUT_S, 0.05):
            raise AssertionError("the gateway never reported its backend up:\n" + g.log())

    def chat(self, port, context, stream):
        status, content_type, body = request(port, "POST", "/v1/chat/completions",
                                             dict(CHAT, stream=stream), context=context)
        self.assertEqual(status, 200, body)
        return content_type, body

    def test_https_completions_streamed_and_not(self):
        g = self.gateway()
        ctx = self.context()
        self.wait_healthy(g, ctx)

        # Through HTTPS and gRPC over mutual TLS, the greedy text is llama2.c's reference.
        status, _, body = request(g.port, "POST", "/v1/completions", {
            "model": MODEL_NAME, "prompt": "Once upon a time", "max_tokens": 24,
            "temperature": 0, "ignore_eos": True}, context=ctx)
        self.assertEqual(status, 200, body)
        text = json.loads(body)["choices"][0]["text"]
        self.assertGreater(len(text), 20)
        self.assertTrue(read_text(GREEDY_REFERENCE).startswith("Once upon a time" + text), text)

        _, body = self.chat(g.port, ctx, stream=False)
        answer = json.loads(body)
        self.assertEqual(answer["object"], "chat.completion")
        self.assertEqual(answer["usage"]["completion_tokens"], 8)
        content = answer["choices"][0]["message"]["content"]
        self.assertTrue(content)

        content_type, body = self.chat(g.port, ctx, stream=True)
        self.assertTrue(content_type.startswith("text/event-stream"), content_type)
        events = sse_events(body)
        self.assertEqual(events[-1], "[DONE]")
        streamed = "".join(e["choices"][0]["delta"].get("content") or ""
                           for e in events[:-1] if e["choices"])
        self.assertEqual(streamed, content)
        self.assertEqual(events[-2]["choices"][0]["finish_reason"], "length")

        # The admin routes are on the same HTTPS listener.
        status, _, body = request(g.port, "GET", "/metrics", context=ctx)
        self.assertEqual(status, 200)
        self.assertIn(b"funnel_gateway:requests_total", body)

    def test_https_refuses_plain_http_and_untrusting_clients(self):
        g = self.gateway()
        ctx = self.context()
        self.wait_healthy(g, ctx)
        with self.assertRaises((ConnectionError, http.client.HTTPException)):
            request(g.port, "GET", "/health")
        with self.assertRaises(ssl.SSLCertVerificationError):
            request(g.port, "GET", "/health", context=self.context("other-ca.pem"))
        # Still serving after the refused connections.
        self.assertEqual(request(g.port, "GET", "/health", context=ctx)[0], 200)

    def test_client_certificates_with_tls_client_ca(self):
        g = self.gateway("--tls-client-ca", self.path("ca.pem"))
        with_cert = self.context(identity="client")
        self.wait_healthy(g, with_cert)
        _, body = self.chat(g.port, with_cert, stream=False)
        self.assertEqual(json.loads(body)["usage"]["completion_tokens"], 8)
        for path in ("/health", "/v1/models"):
            with self.assertRaises(REFUSED):
                request(g.port, "GET", path, context=self.context())

    def test_backend_tls_failures_answer_503(self):
        # A backend CA that did not sign the server's certificate, and plaintext to a TLS server.
        for backend_ca in ("other-ca.pem", None):
            g = self.gateway(backend_ca=backend_ca)
            time.sleep(1.0)  # several probe rounds fail meanwhile (not an assertion)
            status, _, body = request(g.port, "POST", "/v1/chat/completions", CHAT,
                                      context=self.context())
            self.assertEqual(status, 503, body)
            self.assertIn("error", json.loads(body))
            status, _, body = request(g.port, "GET", "/health", context=self.context())
            self.assertEqual(status, 503, body)
            self.assertEqual(json.loads(body)["backends_up"], 0)
            self.assertIn("is down: UNAVAILABLE", g.log())

    def test_bad_tls_flags_exit_2(self):
        p = self.path
        cases = [
            (["--tls-cert", p("server.pem")], "--tls-cert and --tls-key go together"),
            (["--tls-client-ca", p("ca.pem")], "--tls-client-ca needs --tls-cert"),
            (["--tls-cert", p("missing.pem"), "--tls-key", p("server.key")], "--tls-cert"),
            (["--tls-cert", p("server.key"), "--tls-key", p("server.key")], "no PEM certificate"),
            (["--tls-cert", p("server.pem"), "--tls-key", p("client.key")], "not the private key"),
            (["--tls-cert", p("server.pem"), "--tls-key", p("server.key"), "--tls-client-ca",
              p("san.ext")], "--tls-client-ca"),
            (["--backend-tls-ca", p("server.key")], "--backend-tls-ca"),
            (["--backend-tls-cert", p("client.pem")], "--backend-tls-key"),
            (["--backend-tls=yes"], "--backend-tls takes no value"),
        ]
        for args, says in cases:
            g = Gateway("--backend", "127.0.0.1:1", *args)
            try:
                code, out = g.run_to_exit()
            finally:
                g.stop()
            self.assertEqual(code, 2, out)
            self.assertIn(says, out)


if __name__ == "__main__":
    unittest.main()
