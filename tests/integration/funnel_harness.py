"""Runs a real funnel-server process for the integration tests.

The server listens on 127.0.0.1 with ephemeral ports (--port 0 / --admin-port 0) and reports
them through --port-file / --admin-port-file. Every wait is bounded, and the process is always
killed when the test ends (SIGTERM, then SIGKILL).

Environment (set by ctest, see CMakeLists.txt): FUNNEL_SERVER (the binary), PYTHONPATH with
the stubs generated from proto/ into <build>/python, FUNNEL_SHARED_DATA (optional) or
FUNNEL_SHARED_DATA_DEFAULT.
"""

import os
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import grpc

from funnel.v1 import inference_pb2 as pb
from funnel.v1 import inference_pb2_grpc as pb_grpc

START_TIMEOUT_S = 60
RPC_TIMEOUT_S = 60


def shared_data(relative):
    root = os.environ.get("FUNNEL_SHARED_DATA") or os.environ.get("FUNNEL_SHARED_DATA_DEFAULT")
    if not root:
        here = os.path.dirname(os.path.abspath(__file__))
        root = os.path.join(here, "..", "..", "..", "shared", "data")
    return os.path.join(root, relative)


MODEL = shared_data("models/stories260K/stories260K.gguf")


def server_binary():
    path = os.environ.get("FUNNEL_SERVER")
    if not path or not os.path.exists(path):
        raise unittest.SkipTest("FUNNEL_SERVER is not set to a built funnel-server")
    return path


def read_text(path):
    with open(path) as f:
        return f.read()


def bearer(key):
    return (("authorization", "Bearer " + key),)


def wait_until(predicate, timeout_s, interval_s=0.05):
    """Polls predicate() until it returns a truthy value (returned) or the time is up (None)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval_s)


def parse_metrics(text):
    """Prometheus text → {sample name with labels: float}."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


class FunnelServer:
    """One funnel-server process. Use as a context manager (always stopped on exit)."""

    def __init__(self, *args, model=MODEL, threads=2):
        self.args = list(args)
        self.model = model
        self.threads = threads
        self.proc = None
        self.dir = None
        self.port = None
        self.admin_port = None
        self.channel = None
        self.stub = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.kill()
        return False

    def start(self, channel_credentials=None):
        """Starts the server; `channel_credentials` (grpc.ssl_channel_credentials) for a TLS
        server."""
        self.dir = tempfile.TemporaryDirectory(prefix="funnel-it-")
        port_file = os.path.join(self.dir.name, "port")
        admin_file = os.path.join(self.dir.name, "admin-port")
        self.log_path = os.path.join(self.dir.name, "server.log")
        cmd = [server_binary(), "--model", self.model, "--host", "127.0.0.1", "--port", "0",
               "--port-file", port_file, "--admin-port", "0", "--admin-port-file", admin_file,
               "--threads", str(self.threads)] + self.args
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        ok = wait_until(lambda: self.proc.poll() is not None or
                        (os.path.exists(port_file) and os.path.exists(admin_file)),
                        START_TIMEOUT_S)
        if not ok or self.proc.poll() is not None:
            self.kill()
            raise AssertionError("funnel-server did not start:\n" + self.read_log())
        self.port = int(read_text(port_file))
        self.admin_port = int(read_text(admin_file))
        target = "127.0.0.1:%d" % self.port
        self.channel = (grpc.secure_channel(target, channel_credentials) if channel_credentials
                        else grpc.insecure_channel(target))
        grpc.channel_ready_future(self.channel).result(timeout=START_TIMEOUT_S)
        self.stub = pb_grpc.InferenceStub(self.channel)

    def read_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout_s):
        """Exit status, or None if still running after timeout_s."""
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if self.wait(15) is None:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self.dir is not None:
            self.log.close()
            self.dir.cleanup()
            self.dir = None

    # --- admin HTTP ---------------------------------------------------------------------------

    def http_get(self, path):
        """(status, body) of GET http://127.0.0.1:<admin>/path; (None, "") when nothing
        answers (the listener is gone)."""
        url = "http://127.0.0.1:%d%s" % (self.admin_port, path)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except (urllib.error.URLError, ConnectionError):
            return None, ""

    def metrics_text(self):
        status, body = self.http_get("/metrics")
        assert status == 200, status
        return body

    def metrics(self):
        return parse_metrics(self.metrics_text())

    def wait_metric(self, name, predicate, timeout_s=20):
        """Polls /metrics until predicate(value of name) holds; returns the last value."""
        last = [None]

        def check():
            last[0] = self.metrics().get(name)
            return last[0] is not None and predicate(last[0])

        if not wait_until(check, timeout_s, 0.05):
            raise AssertionError("%s never satisfied the condition; last value %r"
                                 % (name, last[0]))
        return last[0]

    # --- gRPC helpers -------------------------------------------------------------------------

    def generate(self, request, metadata=None, timeout=RPC_TIMEOUT_S):
        """Runs a Generate to its end: (deltas, final)."""
        deltas, final = [], None
        for msg in self.stub.Generate(request, metadata=metadata, timeout=timeout):
            if msg.HasField("delta"):
                deltas.append(msg.delta)
            else:
                final = msg.final
        return deltas, final

    def greedy_ids(self, prompt_ids, max_tokens, metadata=None, **request_fields):
        request = pb.GenerateRequest(
            prompt_ids=pb.PromptIds(ids=prompt_ids),
            sampling=pb.SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True),
            **request_fields)
        deltas, final = self.generate(request, metadata=metadata)
        return [d.token_id for d in deltas], final


def greedy(max_tokens, **fields):
    """SamplingParams for greedy decoding that ignores EOS (exact token counts)."""
    return pb.SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, **fields)


def error_code(call):
    """Runs a call (a callable) and returns the grpc.StatusCode it failed with, or OK."""
    try:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
            for _ in result:
                pass
        return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()


KV_USAGE = "funnel:kv_cache_usage_perc"