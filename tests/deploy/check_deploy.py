"""Checks the Dockerfile and deploy/ against the real build (ctest `deploy.consistency`).

Every binary, CMake option, runtime library, flag, port, path and metric name that the Dockerfile,
docker-compose.yml, the Prometheus/Grafana files and the Kubernetes manifests name must exist:

- every YAML/JSON file under deploy/ parses;
- Dockerfile: the -D options are the project's CMake cache options with valid values, the
  built targets are the binaries the runtime stages copy, the build stages install exactly
  scripts/install-deps' build packages, and the CPU runtime stage installs the Debian package of
  every shared library the real binaries link (ldd + dpkg -S) and nothing they do not use;
- every command line (Dockerfile CMD, compose, Kubernetes) is accepted by the real binary:
  each flag is in its --help, and the server/gateway start with those arguments (only the
  model, listen addresses, ports, directories and memory sizes replaced by test values);
- ports and paths agree between flags, EXPOSE, HEALTHCHECK, probes, Services, compose port
  mappings and volumes, Prometheus targets and Grafana provisioning;
- every metric (and label) the dashboard and the alert rules use is in the /metrics output of
  a running funnel-server and funnel-gateway.

Environment (set by tests/deploy/CMakeLists.txt): FUNNEL_SOURCE_DIR, FUNNEL_SERVER,
FUNNEL_GATEWAY, FUNNEL_CLI (paths from $<TARGET_FILE:...>).
"""

import glob
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request

import yaml

START_TIMEOUT_S = 60
SOURCE_DIR = os.environ.get("FUNNEL_SOURCE_DIR",
                            os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
DEPLOY_DIR = os.path.join(SOURCE_DIR, "deploy")
K8S_BASE = os.path.join(DEPLOY_DIR, "k8s", "base")
BINARY_ENV = {"funnel-server": "FUNNEL_SERVER", "funnel-gateway": "FUNNEL_GATEWAY",
              "funnel": "FUNNEL_CLI"}
# Libraries every Debian/Ubuntu base image has (Essential or required by apt itself).
BASE_IMAGE_PACKAGES = {"libc6", "libstdc++6", "libgcc-s1"}
# Debian 12 runtime package -> its Ubuntu 24.04 name (nvidia/cuda images are Ubuntu-based).
UBUNTU_NOBLE_NAMES = {
    "libgrpc++1.51": "libgrpc++1.51t64",
    "libgrpc29": "libgrpc29t64",
    "libprotobuf32": "libprotobuf32t64",
    "libabsl20220623": "libabsl20220623t64",
    "libspdlog1.10": "libspdlog1.12",
    "libcpp-httplib0.11": "libcpp-httplib0.14t64",
    "libssl3": "libssl3t64",
}
# Build packages of scripts/install-deps that an image build does not need (tests, VCS, Node,
# Python).
NOT_FOR_IMAGE_BUILD = {"git", "curl", "nodejs", "npm", "libgtest-dev", "libgmock-dev", "openssl",
                       "zlib1g-dev",  # test-only: TLS certificates, the PNG test decoder
                       "clang-14", "libclang-rt-14-dev"}  # test-only: the libFuzzer targets


def read(path):
    with open(path) as f:
        return f.read()


# --- parsing helpers ------------------------------------------------------------------------


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def interpolate(value):
    """docker compose variable substitution with the defaults: ${X:-d} -> d, ${X} -> ''."""
    if isinstance(value, str):
        return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}",
                      lambda m: m.group(1) or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def flag_values(args):
    """['--a', 'x', '--b=y'] -> {'a': ['x'], 'b': ['y']} (a flag without a value: [''])."""
    out = {}
    i = 0
    while i < len(args):
        a = str(args[i])
        if a.startswith("--"):
            name, eq, val = a[2:].partition("=")
            if not eq and i + 1 < len(args) and not str(args[i + 1]).startswith("--"):
                val = str(args[i + 1])
                i += 1
            out.setdefault(name, []).append(val)
        i += 1
    return out


def one(flags, name, default=None):
    v = flags.get(name)
    return v[-1] if v else default


def help_default(help_text, flag):
    """The '(default X)' of --flag in a --help text, or None."""
    m = re.search(r"^\s+--%s(?=[\s=])(.*?)(?=^\s+--|\Z)" % re.escape(flag), help_text,
                  re.M | re.S)
    if not m:
        return None
    d = re.search(r"\(default ([^)]+)\)", m.group(1))
    return d.group(1) if d else None


def byte_size(text):
    """'16G' / '512M' / '64k' / '1048576' -> bytes; Kubernetes '32Gi' / '256Mi' too."""
    m = re.fullmatch(r"(\d+)([kKmMgGtT]?)(i?)", str(text))
    if not m:
        raise ValueError("not a size: %r" % text)
    shift = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[m.group(2).lower()]
    return int(m.group(1)) << shift


def url_port_path(text):
    m = re.search(r"http://(?:127\.0\.0\.1|localhost):(\d+)(/\S*)", text)
    return (int(m.group(1)), m.group(2).rstrip("'\"")) if m else (None, None)


class Dockerfile:
    """The instructions of a Dockerfile, grouped by stage, with ARG values substituted."""

    def __init__(self, path):
        self.global_args = {}
        self.stages = []  # dicts: name, image, args, instrs [(KEYWORD, text)]
        lines, buf = [], ""
        for raw in read(path).splitlines():
            if raw.strip().startswith("#"):
                continue
            if raw.rstrip().endswith("\\"):
                buf += raw.rstrip()[:-1] + " "
                continue
            lines.append(buf + raw)
            buf = ""
        for line in lines:
            if not line.strip():
                continue
            key, _, rest = line.strip().partition(" ")
            key, rest = key.upper(), rest.strip()
            if key == "FROM":
                parts = rest.split()
                image = self.expand(parts[0], self.global_args)
                name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
                self.stages.append({"name": name, "image": image, "args": {}, "instrs": []})
            elif key == "ARG":
                name, eq, val = rest.partition("=")
                val = val.strip('"')
                if not self.stages:
                    self.global_args[name] = val
                else:
                    st = self.stages[-1]
                    st["args"][name] = val if eq else self.global_args.get(name, "")
            else:
                st = self.stages[-1]
                st["instrs"].append((key, self.expand(rest, st["args"])))

    @staticmethod
    def expand(text, args):
        return re.sub(r"\$\{(\w+)\}|\$(\w+)",
                      lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)

    def stage(self, name):
        for st in self.stages:
            if st["name"] == name:
                return st
        raise KeyError("no stage %r" % name)

    @staticmethod
    def all(stage, key):
        return [text for k, text in stage["instrs"] if k == key]

    @staticmethod
    def run_segments(stage):
        for text in Dockerfile.all(stage, "RUN"):
            for seg in text.split("&&"):
                yield seg.strip()

    def apt_packages(self, stage):
        pkgs = []
        for seg in self.run_segments(stage):
            toks = seg.split()
            if "apt-get" in toks and "install" in toks:
                pkgs += [t for t in toks[toks.index("install") + 1:] if not t.startswith("-")]
        return pkgs

    def cmake_defines(self, stage):
        out = {}
        for seg in self.run_segments(stage):
            toks = shlex.split(seg)
            if toks[:2] == ["cmake", "-S"]:
                for t in toks:
                    if t.startswith("-D"):
                        name, _, val = t[2:].partition("=")
                        out[name] = val
        return out

    def build_dir_and_targets(self, stage):
        build_dir, targets = None, []
        for seg in self.run_segments(stage):
            toks = shlex.split(seg)
            if toks[:2] == ["cmake", "-S"]:
                build_dir = toks[toks.index("-B") + 1]
            if toks[:2] == ["cmake", "--build"] and "--target" in toks:
                for t in toks[toks.index("--target") + 1:]:
                    if t.startswith("-"):
                        break
                    targets.append(t)
        return build_dir, targets

    def copies_from(self, stage):
        """[(from_stage, [sources], dest)] of COPY --from=..."""
        out = []
        for text in self.all(stage, "COPY"):
            toks = text.split()
            if toks and toks[0].startswith("--from="):
                out.append((toks[0][len("--from="):], toks[1:-1], toks[-1]))
        return out

    def exec_form(self, stage, key):
        vals = self.all(stage, key)
        return json.loads(vals[-1]) if vals else []


# --- the real build -------------------------------------------------------------------------


def binary(name):
    """The built binary; skips when run by hand without the variable, fails when ctest names a
    binary that was not built."""
    path = os.environ.get(BINARY_ENV[name])
    if not path:
        raise unittest.SkipTest("%s is not set to a built %s" % (BINARY_ENV[name], name))
    if not os.access(path, os.X_OK):
        raise AssertionError("%s=%s: no such executable (build it first)"
                             % (BINARY_ENV[name], path))
    return path


_help_cache = {}


def help_text(name):
    if name not in _help_cache:
        r = subprocess.run([binary(name), "--help"], capture_output=True, text=True, timeout=30)
        _help_cache[name] = r.stdout + r.stderr
    return _help_cache[name]


def check_flags(name, args):
    """Problems with `name args`: flags missing from --help, or refused by the parser."""
    problems = []
    text = help_text(name)
    for flag in flag_values(args):
        if not re.search(r"^\s+--%s(?=[\s=]|$)" % re.escape(flag), text, re.M):
            problems.append("%s: --%s is not in its --help" % (name, flag))
    r = subprocess.run([binary(name)] + [str(a) for a in args] + ["--help"],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        problems.append("%s refuses %s: %s" % (name, args, (r.stdout + r.stderr).strip()))
    return problems


def in_cuda_toolkit(path):
    """True for a library of the CUDA toolkit (/usr/local/cuda*/..., or under $CUDA_HOME)."""
    roots = ["/usr/local/cuda"] + [os.environ[v] for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    real = os.path.realpath(path)
    return any(p.startswith(r) for r in roots for p in (path, real))


def ldd_libraries(path):
    """{soname: resolved path} of every shared library `path` loads (the whole closure)."""
    out = {}
    for line in subprocess.run(["ldd", path], capture_output=True, text=True).stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] == "=>" and parts[2].startswith("/"):
            out[parts[0]] = parts[2]
        elif len(parts) == 2 and parts[0].startswith("/"):  # the dynamic loader: "/lib64/ld-... (0x..)"
            out[os.path.basename(parts[0])] = parts[0]
    return out


def needed_libraries(path):
    text = subprocess.run(["readelf", "-d", path], capture_output=True, text=True).stdout
    return re.findall(r"\(NEEDED\).*\[(.+)\]", text)


def owning_packages(lib_paths):
    """{path: Debian package holding it, or None} (merged-/usr aware; one dpkg call)."""
    variants = {}
    for p in lib_paths:
        cands = [p, os.path.realpath(p)]
        for c in list(cands):
            cands.append(c[4:] if c.startswith("/usr/") else "/usr" + c)
        variants[p] = cands
    owner = {}
    every = sorted({c for cands in variants.values() for c in cands})
    r = subprocess.run(["dpkg", "-S"] + every, capture_output=True, text=True)
    for line in r.stdout.splitlines():
        pkgs, sep, path = line.partition(": ")
        if sep:
            owner[path.strip()] = pkgs.split(",")[0].split(":")[0].strip()
    return {p: next((owner[c] for c in cands if c in owner), None)
            for p, cands in variants.items()}


def parse_metrics(text):
    """Prometheus text -> {metric name: [label dict, ...]}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s", line)
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out.setdefault(m.group(1), []).append(labels)
    return out


METRIC_RE = re.compile(r"\b(funnel(?:_gateway)?:[a-zA-Z0-9_:]+)")


def check_expr_metrics(expr, samples):
    """Problems with a PromQL expression against parsed /metrics samples: unknown metric names,
    equality matchers with no such label value, `by (...)` labels no referenced metric has."""
    problems = []
    names = METRIC_RE.findall(expr)
    for name in names:
        if name not in samples:
            problems.append("metric %s (in %r) is not exported" % (name, expr))
    for name, matchers in re.findall(r"(funnel(?:_gateway)?:[a-zA-Z0-9_:]+)\{([^}]*)\}", expr):
        for label, value in re.findall(r'(\w+)="([^"$]*)"', matchers):
            if name in samples and not any(s.get(label) == value for s in samples[name]):
                problems.append("no %s{%s=%r} sample" % (name, label, value))
    for group in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        for label in [x.strip() for x in group.split(",") if x.strip()]:
            if label in ("instance", "job", "le"):
                continue  # added by Prometheus / present on every histogram bucket
            if not any(label in s for n in names for s in samples.get(n, [])):
                problems.append("label %r (in %r) is on none of %s" % (label, expr, names))
    return problems


def http_get(port, path, timeout=10):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return None, ""


def wait_until(predicate, timeout_s, interval_s=0.05):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval_s)


class Process:
    """A funnel-server or funnel-gateway started with a manifest's arguments, on 127.0.0.1 and
    ephemeral ports, always stopped (SIGTERM, then SIGKILL)."""

    def __init__(self, name, args):
        self.dir = tempfile.mkdtemp(prefix="funnel-deploy-")
        self.port_file = os.path.join(self.dir, "port")
        extra = ["--port-file", self.port_file]
        if name == "funnel-server":
            self.admin_file = os.path.join(self.dir, "admin-port")
            extra += ["--admin-port-file", self.admin_file]
        self.log_path = os.path.join(self.dir, "log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary(name)] + args + extra, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        files = [self.port_file] + ([self.admin_file] if name == "funnel-server" else [])
        ok = wait_until(lambda: self.proc.poll() is not None or
                        all(os.path.exists(f) for f in files), START_TIMEOUT_S)
        if not ok or self.proc.poll() is not None:
            log = self.output()
            self.stop()
            raise AssertionError("%s %s did not start:\n%s" % (name, args, log))
        self.port = int(read(self.port_file))
        self.admin_port = int(read(self.admin_file)) if name == "funnel-server" else None

    def output(self):
        self.log.flush()
        return read(self.log_path)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def server_test_args(args, model, session_dir):
    """A manifest's server arguments with only the host-specific values replaced."""
    replace = {"model": model, "host": "127.0.0.1", "port": "0", "admin-port": "0",
               "session-dir": session_dir, "threads": "2", "kv-cache-bytes": "64M"}
    out, i = [], 0
    while i < len(args):
        a = str(args[i])
        name = a[2:]
        if a.startswith("--") and name in replace and i + 1 < len(args):
            out += [a, replace[name]]
            i += 2
            continue
        out.append(a.replace("$(POD_NAME)", "funnel-server-0"))
        i += 1
    return out


def gateway_test_args(args, backend):
    replace = {"host": "127.0.0.1", "port": "0"}
    out, i, backend_added = [], 0, False
    while i < len(args):
        a = str(args[i])
        if a == "--backend" and i + 1 < len(args):
            if not backend_added:
                out += ["--backend", backend]
                backend_added = True
            i += 2
            continue
        if a.startswith("--") and a[2:] in replace and i + 1 < len(args):
            out += [a, replace[a[2:]]]
            i += 2
            continue
        out.append(a)
        i += 1
    return out


# --- the deployment files -------------------------------------------------------------------


class Deployment:
    """Everything the checks read, parsed once."""

    def __init__(self):
        self.dockerfile = Dockerfile(os.path.join(SOURCE_DIR, "Dockerfile"))
        self.compose = interpolate(load_yaml_docs(os.path.join(DEPLOY_DIR,
                                                               "docker-compose.yml"))[0])
        self.prometheus = load_yaml_docs(os.path.join(DEPLOY_DIR, "prometheus",
                                                      "prometheus.yml"))[0]
        self.alerts = load_yaml_docs(os.path.join(DEPLOY_DIR, "prometheus", "alerts.yml"))[0]
        self.dashboard = json.loads(read(os.path.join(DEPLOY_DIR, "grafana", "dashboards",
                                                      "funnel.json")))
        self.datasources = load_yaml_docs(os.path.join(
            DEPLOY_DIR, "grafana", "provisioning", "datasources", "prometheus.yml"))[0]
        self.providers = load_yaml_docs(os.path.join(
            DEPLOY_DIR, "grafana", "provisioning", "dashboards", "funnel.yml"))[0]
        self.kustomization = load_yaml_docs(os.path.join(K8S_BASE, "kustomization.yaml"))[0]
        self.k8s = []
        for res in self.kustomization.get("resources", []):
            self.k8s += load_yaml_docs(os.path.join(K8S_BASE, res))
        self.monitoring = load_yaml_docs(os.path.join(DEPLOY_DIR, "k8s", "monitoring",
                                                      "servicemonitor.yaml"))

    def k8s_objects(self, kind):
        return [o for o in self.k8s if o.get("kind") == kind]

    def image_entrypoint(self, image):
        """The ENTRYPOINT binary of image 'funnel:<stage>'."""
        stage = self.dockerfile.stage(image.split(":", 1)[1])
        return self.dockerfile.exec_form(stage, "ENTRYPOINT")[0]

    def invocations(self):
        """[(where, binary, args)] of every funnel command line in the Dockerfile, compose and
        the Kubernetes manifests."""
        out = []
        df = self.dockerfile
        for st in df.stages:
            entry = df.exec_form(st, "ENTRYPOINT")
            if entry:
                out.append(("Dockerfile stage %s" % st["name"], entry[0],
                            entry[1:] + df.exec_form(st, "CMD")))
        for name, svc in self.compose["services"].items():
            image = svc.get("image", "")
            if not image.startswith("funnel:"):
                continue
            entry = svc.get("entrypoint") or [self.image_entrypoint(image)]
            out.append(("compose service %s" % name, entry[0], entry[1:] + svc.get("command", [])))
        for kind in ("StatefulSet", "Deployment"):
            for obj in self.k8s_objects(kind):
                for c in obj["spec"]["template"]["spec"]["containers"]:
                    entry = c.get("command") or [self.image_entrypoint(c["image"])]
                    out.append(("%s %s" % (kind, obj["metadata"]["name"]), entry[0],
                                entry[1:] + c.get("args", [])))
        return out


def container_port(container, name_or_number):
    if isinstance(name_or_number, int):
        return name_or_number
    for p in container.get("ports", []):
        if p.get("name") == name_or_number:
            return p["containerPort"]
    return None


def compose_container_ports(svc):
    return {int(str(p).split(":")[-1].split("/")[0]) for p in svc.get("ports", [])}


def compose_mounts(svc):
    """{container path: source} of a compose service's volumes."""
    out = {}
    for v in svc.get("volumes", []):
        parts = str(v).split(":")
        out[parts[1]] = parts[0]
    return out


def under(path, dirs):
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)


class DeployFilesParse(unittest.TestCase):
    def test_every_yaml_and_json_file_parses(self):
        files = sorted(glob.glob(os.path.join(DEPLOY_DIR, "**", "*"), recursive=True))
        parsed = 0
        for path in files:
            if path.endswith((".yml", ".yaml")):
                docs = load_yaml_docs(path)
                self.assertTrue(docs, "%s holds no YAML document" % path)
                for d in docs:
                    self.assertIsInstance(d, dict, path)
                parsed += 1
            elif path.endswith(".json"):
                self.assertIsInstance(json.loads(read(path)), dict, path)
                parsed += 1
        self.assertGreaterEqual(parsed, 15, "expected the compose, Prometheus, Grafana and "
                                "Kubernetes files under %s" % DEPLOY_DIR)

    def test_kustomizations_list_existing_files_and_every_base_manifest(self):
        d = Deployment()
        listed = set(d.kustomization["resources"])
        for res in listed:
            self.assertTrue(os.path.exists(os.path.join(K8S_BASE, res)), res)
        on_disk = {os.path.basename(p) for p in glob.glob(os.path.join(K8S_BASE, "*.yaml"))}
        self.assertEqual(on_disk - {"kustomization.yaml"}, listed)
        mon = load_yaml_docs(os.path.join(DEPLOY_DIR, "k8s", "monitoring", "kustomization.yaml"))[0]
        for res in mon["resources"]:
            self.assertTrue(os.path.exists(os.path.join(DEPLOY_DIR, "k8s", "monitoring", res)), res)
        for obj in d.k8s + d.monitoring:
            self.assertIn("apiVersion", obj)
            self.assertIn("name", obj.get("metadata", {}))


class DockerfileMatchesBuild(unittest.TestCase):
    def setUp(self):
        self.d = Deployment()
        self.df = self.d.dockerfile
        cmake = read(os.path.join(SOURCE_DIR, "CMakeLists.txt"))
        for path in glob.glob(os.path.join(SOURCE_DIR, "cmake", "*.cmake")):
            cmake += read(path)
        self.cmake = cmake
        self.cache_vars = set(re.findall(r"option\((\w+)", cmake))
        self.cache_vars |= set(re.findall(r"set\((\w+)\s+\"[^\"]*\"\s+CACHE", cmake))

    def build_stages(self):
        return [st for st in self.df.stages if st["name"] and st["name"].startswith("build-")]

    def test_cmake_options_exist_with_valid_values(self):
        arch_default = re.search(r'set\(CMAKE_CUDA_ARCHITECTURES "([^"]+)"\)', self.cmake).group(1)
        cpu_default = re.search(r'set\(FUNNEL_CPU_ARCH "([^"]+)"', self.cmake).group(1)
        self.assertEqual(len(self.build_stages()), 2)
        for st in self.build_stages():
            defs = self.df.cmake_defines(st)
            for name in defs:
                self.assertTrue(name in self.cache_vars or name in ("CMAKE_BUILD_TYPE",
                                                                      "CMAKE_CUDA_ARCHITECTURES"),
                                "%s: -D%s is not a CMake option of the project"
                                % (st["name"], name))
            self.assertIn(defs["FUNNEL_WITH_CUDA"].upper(), ("AUTO", "ON", "OFF"))
            self.assertEqual(defs["FUNNEL_BUILD_TESTS"], "OFF")
            self.assertEqual(defs["CMAKE_BUILD_TYPE"], "Release")
            self.assertEqual(defs["FUNNEL_CPU_ARCH"], cpu_default)
        cpu = self.df.cmake_defines(self.df.stage("build-cpu"))
        self.assertEqual(cpu["FUNNEL_WITH_CUDA"], "OFF")
        cuda = self.df.cmake_defines(self.df.stage("build-cuda"))
        self.assertEqual(cuda["FUNNEL_WITH_CUDA"], "ON")
        self.assertEqual(cuda["CMAKE_CUDA_ARCHITECTURES"], arch_default)
        self.assertTrue(self.df.stage("build-cuda")["image"].startswith("nvidia/cuda:13."))

    def test_built_targets_are_the_copied_binaries(self):
        self.assertRegex(self.cmake, r"CMAKE_RUNTIME_OUTPUT_DIRECTORY \$\{CMAKE_BINARY_DIR\}/bin")
        for runtime in ("cpu", "cuda"):
            st = self.df.stage(runtime)
            copies = self.df.copies_from(st)
            self.assertEqual(len(copies), 1, runtime)
            src_stage, sources, dest = copies[0]
            build_dir, targets = self.df.build_dir_and_targets(self.df.stage(src_stage))
            self.assertEqual(sorted(targets), sorted(BINARY_ENV))
            self.assertEqual(sorted(sources), sorted("%s/bin/%s" % (build_dir, t) for t in targets))
            for t in targets:
                self.assertEqual(os.path.basename(binary(t)), t)  # the real target's file name
            self.assertEqual(dest, "/usr/local/bin/")
            self.assertIn(self.df.exec_form(st, "ENTRYPOINT")[0], targets)

    def test_build_stages_install_exactly_the_build_dependencies(self):
        deps = read(os.path.join(SOURCE_DIR, "scripts", "install-deps"))
        listed = re.search(r"packages=\((.*?)\)", deps, re.S).group(1).split()
        wanted = {p for p in listed if p not in NOT_FOR_IMAGE_BUILD and not p.startswith("python3")}
        for st in self.build_stages():
            self.assertEqual(set(self.df.apt_packages(st)), wanted,
                             "%s and scripts/install-deps differ: add build dependencies to the "
                             "Dockerfile, test-only packages to NOT_FOR_IMAGE_BUILD here"
                             % st["name"])

    def test_cpu_runtime_installs_the_packages_of_the_linked_libraries(self):
        if shutil.which("dpkg") is None or shutil.which("readelf") is None:
            self.skipTest("needs dpkg and readelf (Debian)")
        installed = set(self.df.apt_packages(self.df.stage("cpu")))
        resolved = {name: ldd_libraries(binary(name)) for name in BINARY_ENV}
        # A build with CUDA (nvcc found) also links the CUDA toolkit's libraries (cuBLAS, cudart);
        # the CPU image is built with FUNNEL_WITH_CUDA=OFF and the CUDA image gets them from its
        # nvidia/cuda base image, so they are not Debian packages of either runtime stage.
        libs = {name: {so: p for so, p in r.items() if not in_cuda_toolkit(p)}
                for name, r in resolved.items()}
        owner = owning_packages({p for l in libs.values() for p in l.values()})
        needed, closure_pkgs = {}, set(owner.values())
        for name in BINARY_ENV:
            for soname in needed_libraries(binary(name)):
                self.assertIn(soname, resolved[name], "%s: %s does not resolve" % (name, soname))
                if soname not in libs[name]:
                    continue  # a CUDA toolkit library
                pkg = owner[libs[name][soname]]
                self.assertIsNotNone(pkg, "no Debian package owns %s" % libs[name][soname])
                needed.setdefault(pkg, set()).add(soname)
        missing = {p: sorted(s) for p, s in needed.items()
                   if p not in installed and p not in BASE_IMAGE_PACKAGES}
        self.assertEqual(missing, {}, "runtime stage 'cpu' lacks the packages of these libraries")
        unused = {p for p in installed if p.startswith("lib") and p not in closure_pkgs}
        self.assertEqual(unused, set(), "runtime stage 'cpu' installs libraries no binary loads")
        extra_tools = {p for p in installed if not p.startswith("lib")}
        health = " ".join(self.df.all(self.df.stage("cpu"), "HEALTHCHECK"))
        self.assertEqual(extra_tools, {"curl"} if "curl" in health else set())
        # Every library the binaries load (the whole ldd closure) comes with the installed
        # packages' dependencies (apt's view of the Debian archive) or with the base image.
        if shutil.which("apt-cache") is None:
            return
        r = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests",
                            "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances"]
                           + sorted(installed), capture_output=True, text=True, timeout=120)
        apt_closure = {line.strip() for line in r.stdout.splitlines()
                       if line and not line.startswith(" ") and not line.startswith("<")}
        self.assertTrue(installed <= apt_closure, r.stderr)
        self.assertEqual(closure_pkgs - apt_closure - BASE_IMAGE_PACKAGES, set(),
                         "libraries the binaries load that the runtime stage would not install")

    def test_cuda_runtime_installs_the_same_libraries_under_ubuntu_names(self):
        cpu = self.df.apt_packages(self.df.stage("cpu"))
        cuda = self.df.apt_packages(self.df.stage("cuda"))
        self.assertEqual(sorted(cuda), sorted(UBUNTU_NOBLE_NAMES.get(p, p) for p in cpu))
        self.assertTrue(self.df.stage("cuda")["image"].startswith("nvidia/cuda:13."))
        self.assertIn("runtime-ubuntu24.04", self.df.stage("cuda")["image"])
        self.assertIn("devel-ubuntu24.04", self.df.stage("build-cuda")["image"])

    def test_runtime_stages_run_as_a_non_root_user_with_a_healthcheck(self):
        for runtime in ("cpu", "cuda"):
            st = self.df.stage(runtime)
            self.assertEqual(self.df.all(st, "USER"), ["funnel"])
            uid = re.search(r"useradd .*--uid (\d+)", " ".join(self.df.all(st, "RUN")))
            self.assertIsNotNone(uid)
            self.assertEqual(int(uid.group(1)), 10001)
            self.assertEqual(len(self.df.all(st, "HEALTHCHECK")), 1)


class CommandLinesMatchBinaries(unittest.TestCase):
    def test_every_flag_is_accepted_by_the_real_binary(self):
        d = Deployment()
        invocations = d.invocations()
        self.assertGreaterEqual(len(invocations), 7)  # 2 Dockerfile, 3 compose, 2 k8s
        problems = []
        for where, name, args in invocations:
            self.assertIn(name, BINARY_ENV, where)
            args = [str(a).replace("$(POD_NAME)", "funnel-server-0") for a in args]
            problems += ["%s: %s" % (where, p) for p in check_flags(name, args)]
        self.assertEqual(problems, [])

    def test_the_flag_check_fails_on_a_flag_the_binary_lacks(self):
        problems = check_flags("funnel-server", ["--model", "m.gguf", "--no-such-flag", "1"])
        self.assertEqual(len(problems), 2, problems)  # not in --help, and refused by the parser
        self.assertEqual(check_flags("funnel-gateway", ["--backend", "a:1", "--port", "80"]), [])


class PortsAndPathsAgree(unittest.TestCase):
    def setUp(self):
        self.d = Deployment()

    def server_ports(self, args):
        f = flag_values(args)
        text = help_text("funnel-server")
        return (int(one(f, "port", help_default(text, "port"))),
                int(one(f, "admin-port", help_default(text, "admin-port"))))

    def test_dockerfile(self):
        df = self.d.dockerfile
        gateway_port = int(help_default(help_text("funnel-gateway"), "port"))
        for runtime in ("cpu", "cuda"):
            st = df.stage(runtime)
            args = df.exec_form(st, "CMD")
            grpc, admin = self.server_ports(args)
            exposed = {int(p) for e in df.all(st, "EXPOSE") for p in e.split()}
            self.assertEqual(exposed, {grpc, admin, gateway_port})
            port, path = url_port_path(df.all(st, "HEALTHCHECK")[0])
            self.assertEqual((port, path), (admin, "/health"))
            flags = flag_values(args)
            mkdirs = " ".join(df.all(st, "RUN"))
            self.assertIn(one(flags, "session-dir"), mkdirs.split())
            self.assertIn(os.path.dirname(one(flags, "model")), mkdirs.split())
            self.assertEqual(one(flags, "host"), "0.0.0.0")

    def test_compose(self):
        services = self.d.compose["services"]
        servers = {n: s for n, s in services.items()
                   if s.get("image", "").startswith("funnel:") and "entrypoint" not in s}
        self.assertEqual(sorted(servers), ["server-cpu", "server-gpu"])
        aliases = set()
        for name, svc in servers.items():
            args = svc["command"]
            grpc, admin = self.server_ports(args)
            self.assertEqual(compose_container_ports(svc), {grpc, admin}, name)
            self.assertEqual(url_port_path(" ".join(svc["healthcheck"]["test"])),
                             (admin, "/health"))
            mounts = compose_mounts(svc)
            flags = flag_values(args)
            self.assertIn(one(flags, "session-dir"), mounts, name)
            self.assertTrue(under(one(flags, "model"), mounts), name)
            self.assertEqual(one(flags, "host"), "0.0.0.0")
            self.assertEqual(svc["build"]["target"], svc["image"].split(":")[1])
            self.d.dockerfile.stage(svc["build"]["target"])
            aliases.update(svc["networks"]["default"]["aliases"])
            self.server_grpc, self.server_admin = grpc, admin
        self.assertIn("gpu", services["server-gpu"]["profiles"])
        self.assertIn("cpu", services["server-cpu"]["profiles"])
        devices = services["server-gpu"]["deploy"]["resources"]["reservations"]["devices"]
        self.assertIn("gpu", devices[0]["capabilities"])
        gw = services["gateway"]
        gflags = flag_values(gw["command"])
        gport = int(one(gflags, "port", help_default(help_text("funnel-gateway"), "port")))
        for backend in gflags["backend"]:
            host, port = backend.rsplit(":", 1)
            self.assertIn(host, aliases)
            self.assertEqual(int(port), self.server_grpc)
        self.assertEqual(compose_container_ports(gw), {gport})
        self.assertEqual(url_port_path(" ".join(gw["healthcheck"]["test"])), (gport, "/health"))
        # Prometheus scrapes both admin endpoints; its config and rules are mounted.
        jobs = {j["job_name"]: j for j in self.d.prometheus["scrape_configs"]}
        targets = {n: [t for sc in j["static_configs"] for t in sc["targets"]]
                   for n, j in jobs.items()}
        for t in targets["funnel-server"]:
            self.assertIn(t.rsplit(":", 1)[0], aliases)
            self.assertEqual(int(t.rsplit(":", 1)[1]), self.server_admin)
        self.assertEqual(targets["funnel-gateway"], ["gateway:%d" % gport])
        for j in jobs.values():
            self.assertEqual(j.get("metrics_path", "/metrics"), "/metrics")
        prom = services["prometheus"]
        pmounts = compose_mounts(prom)
        config = [a for a in prom["command"] if a.startswith("--config.file=")][0].split("=", 1)[1]
        for container_path in [config] + self.d.prometheus["rule_files"]:
            self.assertIn(container_path, pmounts)
            self.assertTrue(os.path.isfile(os.path.join(DEPLOY_DIR, pmounts[container_path])))
        # Grafana: provisioning and dashboards mounted where the provider looks.
        gmounts = compose_mounts(services["grafana"])
        self.assertEqual(os.path.normpath(os.path.join(DEPLOY_DIR,
                                                       gmounts["/etc/grafana/provisioning"])),
                         os.path.join(DEPLOY_DIR, "grafana", "provisioning"))
        provider_path = self.d.providers["providers"][0]["options"]["path"]
        self.assertEqual(os.path.normpath(os.path.join(DEPLOY_DIR, gmounts[provider_path])),
                         os.path.join(DEPLOY_DIR, "grafana", "dashboards"))
        ds = self.d.datasources["datasources"][0]
        self.assertEqual(ds["url"], "http://prometheus:9090")
        self.assertIn("127.0.0.1:9090:9090", prom["ports"])
        uids = {p["datasource"]["uid"] for p in self.d.dashboard["panels"] if "datasource" in p}
        self.assertEqual(uids, {ds["uid"]})
        # Named volumes are declared.
        for svc in services.values():
            for src in compose_mounts(svc).values():
                if not src.startswith((".", "/")):
                    self.assertIn(src, self.d.compose["volumes"])

    def test_kubernetes(self):
        sts = self.d.k8s_objects("StatefulSet")[0]
        pod = sts["spec"]["template"]["spec"]
        c = pod["containers"][0]
        args = c["args"]
        flags = flag_values(args)
        grpc, admin = self.server_ports(args)
        self.assertEqual(container_port(c, "grpc"), grpc)
        self.assertEqual(container_port(c, "admin"), admin)
        probes = {k: c[k]["httpGet"] for k in ("readinessProbe", "livenessProbe", "startupProbe")}
        self.assertEqual((probes["readinessProbe"]["path"],
                          container_port(c, probes["readinessProbe"]["port"])), ("/ready", admin))
        self.assertEqual((probes["livenessProbe"]["path"],
                          container_port(c, probes["livenessProbe"]["port"])), ("/health", admin))
        self.assertEqual(probes["startupProbe"]["path"], "/health")
        # Replica id from the pod name; session snapshots on the claim template's volume.
        self.assertEqual(one(flags, "replica-id"), "$(POD_NAME)")
        env = {e["name"]: e for e in c["env"]}
        self.assertEqual(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name")
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        claims = {t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]}
        self.assertIn(mounts.get(one(flags, "session-dir")), claims)
        self.assertTrue(under(one(flags, "model"), mounts))
        self.assertEqual(one(flags, "host"), "0.0.0.0")
        # Resources agree with the flags.
        res = c["resources"]
        self.assertEqual(res["limits"]["nvidia.com/gpu"], 1)
        self.assertEqual(int(one(flags, "threads")), int(res["limits"]["cpu"]))
        self.assertGreater(byte_size(res["limits"]["memory"]),
                           byte_size(one(flags, "kv-cache-bytes")))
        self.assertGreater(pod["terminationGracePeriodSeconds"],
                           float(one(flags, "shutdown-grace")))
        self.assertEqual(pod["securityContext"]["runAsUser"], 10001)  # the image's user
        # Headless Service: the StatefulSet's serviceName, ports to the container's ports.
        services = {s["metadata"]["name"]: s for s in self.d.k8s_objects("Service")}
        headless = services[sts["spec"]["serviceName"]]
        self.assertEqual(headless["spec"]["clusterIP"], "None")
        pod_labels = sts["spec"]["template"]["metadata"]["labels"]
        self.assertTrue(headless["spec"]["selector"].items() <= pod_labels.items())
        self.assertEqual(sts["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), True)
        sports = {p["name"]: p for p in headless["spec"]["ports"]}
        self.assertEqual(container_port(c, sports["grpc"]["targetPort"]), grpc)
        self.assertEqual(container_port(c, sports["admin"]["targetPort"]), admin)
        self.assertEqual(sports["grpc"]["port"], grpc)  # the gateway dials the pod name + port
        # Gateway: one --backend per replica, by stable name.
        dep = self.d.k8s_objects("Deployment")[0]
        gc = dep["spec"]["template"]["spec"]["containers"][0]
        gflags = flag_values(gc["args"])
        self.assertEqual(len(gflags["backend"]), sts["spec"]["replicas"])
        for i, backend in enumerate(gflags["backend"]):
            # funnel-server-<i>.<headless service>[.<namespace>.svc[.cluster.local]]:<grpc port>
            pattern = r"^%s-%d\.%s(\.[a-z0-9-]+\.svc(\.cluster\.local)?)?:%d$" % (
                re.escape(sts["metadata"]["name"]), i, re.escape(headless["metadata"]["name"]),
                grpc)
            self.assertRegex(backend, pattern)
        gport = int(one(gflags, "port", help_default(help_text("funnel-gateway"), "port")))
        self.assertEqual(container_port(gc, "http"), gport)
        self.assertEqual(gc["readinessProbe"]["httpGet"]["path"], "/health")
        self.assertEqual(container_port(gc, gc["readinessProbe"]["httpGet"]["port"]), gport)
        self.assertEqual(container_port(gc, gc["livenessProbe"]["tcpSocket"]["port"]), gport)
        gsvc = services["funnel-gateway"]
        self.assertEqual(container_port(gc, gsvc["spec"]["ports"][0]["targetPort"]), gport)
        gpod_labels = dep["spec"]["template"]["metadata"]["labels"]
        self.assertTrue(gsvc["spec"]["selector"].items() <= gpod_labels.items())
        self.assertEqual(c["image"], "funnel:cuda")
        self.assertEqual(gc["image"], "funnel:cpu")
        # Disruption budgets select the pods.
        pdbs = self.d.k8s_objects("PodDisruptionBudget")
        self.assertEqual(len(pdbs), 2)
        for pdb in pdbs:
            sel = pdb["spec"]["selector"]["matchLabels"].items()
            self.assertTrue(sel <= pod_labels.items() or sel <= gpod_labels.items())
        # ServiceMonitors scrape named Service ports of the selected Services.
        for sm in self.d.monitoring:
            sel = sm["spec"]["selector"]["matchLabels"].items()
            matched = [s for s in services.values() if sel <= s["metadata"]["labels"].items()]
            self.assertTrue(matched, sm["metadata"]["name"])
            for ep in sm["spec"]["endpoints"]:
                self.assertEqual(ep["path"], "/metrics")
                for s in matched:
                    self.assertIn(ep["port"], [p["name"] for p in s["spec"]["ports"]])

    def test_the_port_check_fails_on_a_mismatched_target(self):
        self.d.prometheus["scrape_configs"][0]["static_configs"][0]["targets"] = ["funnel-server:9"]
        with self.assertRaises(AssertionError):
            self.test_compose()


class ServersStartWithTheManifestArguments(unittest.TestCase):
    """Starts funnel-server with each manifest's arguments (model, addresses, ports, directories
    and memory replaced) and funnel-gateway in front of it; checks probes and metric names."""

    @classmethod
    def setUpClass(cls):
        cli = binary("funnel")
        cls.d = Deployment()
        cls.tmp = tempfile.mkdtemp(prefix="funnel-deploy-model-")
        cls.model = os.path.join(cls.tmp, "random.gguf")
        r = subprocess.run([cli, "model", "random", "--out", cls.model, "--layers",
                            "2", "--dim", "64", "--heads", "4", "--kv-heads", "2", "--ffn", "128",
                            "--vocab", "512"], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise AssertionError("funnel model random failed: " + r.stdout + r.stderr)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def collect(self, name, args, gateway_args=None):
        """Starts the server (and a gateway in front of it); returns (server, gateway) samples."""
        sessions = tempfile.mkdtemp(prefix="sessions-", dir=self.tmp)
        server = Process(name, server_test_args(args, self.model, sessions))
        gateway = None
        try:
            self.assertEqual(wait_until(lambda: http_get(server.admin_port, "/ready")[0] == 200,
                                        START_TIMEOUT_S), True, "never ready")
            self.assertEqual(http_get(server.admin_port, "/health")[0], 200)
            status, text = http_get(server.admin_port, "/metrics")
            self.assertEqual(status, 200)
            server_samples = parse_metrics(text)
            gateway_samples = {}
            if gateway_args is not None:
                gateway = Process("funnel-gateway", gateway_test_args(
                    gateway_args, "127.0.0.1:%d" % server.port))
                self.assertTrue(wait_until(lambda: http_get(gateway.port, "/health")[0] == 200,
                                           START_TIMEOUT_S), "gateway never saw its backend")
                self.assertEqual(http_get(gateway.port, "/v1/models")[0], 200)
                status, text = http_get(gateway.port, "/metrics")
                self.assertEqual(status, 200)
                gateway_samples = parse_metrics(text)
            return server_samples, gateway_samples
        finally:
            if gateway is not None:
                gateway.stop()
            server.stop()

    def dashboard_exprs(self):
        exprs = []
        for p in self.d.dashboard["panels"]:
            exprs += [t["expr"] for t in p.get("targets", [])]
        return exprs

    def alert_exprs(self):
        return [r["expr"] for g in self.d.alerts["groups"] for r in g["rules"]]

    def test_kubernetes_pair_serves_every_metric_the_dashboard_and_alerts_use(self):
        sts = self.d.k8s_objects("StatefulSet")[0]
        dep = self.d.k8s_objects("Deployment")[0]
        server, gateway = self.collect(
            "funnel-server", sts["spec"]["template"]["spec"]["containers"][0]["args"],
            dep["spec"]["template"]["spec"]["containers"][0]["args"])
        samples = dict(server, **gateway)
        exprs = self.dashboard_exprs() + self.alert_exprs()
        used = {n for e in exprs for n in METRIC_RE.findall(e)}
        for name in ("funnel:num_requests_waiting", "funnel:num_requests_running",
                     "funnel:kv_cache_usage_perc", "funnel:kv_cache_compression_ratio",
                     "funnel:num_sessions", "funnel:time_to_first_token_seconds_bucket",
                     "funnel:time_per_output_token_seconds_bucket",
                     "funnel:e2e_request_latency_seconds_bucket", "funnel:prompt_tokens_total",
                     "funnel:generation_tokens_total", "funnel:request_rejections_total"):
            self.assertIn(name, used, "the dashboard/alerts should show %s" % name)
        problems = [p for e in exprs for p in check_expr_metrics(e, samples)]
        self.assertEqual(problems, [])
        # The check itself catches a wrong name, label value or grouping label.
        self.assertTrue(check_expr_metrics("rate(funnel:no_such_total[5m])", samples))
        self.assertTrue(check_expr_metrics('funnel:request_rejections_total{reason="nope"}',
                                           samples))
        self.assertTrue(check_expr_metrics("sum by (nope) (funnel:num_sessions)", samples))

    def test_dockerfile_command_starts(self):
        st = self.d.dockerfile.stage("cpu")
        self.collect("funnel-server", self.d.dockerfile.exec_form(st, "CMD"))

    def test_compose_commands_start(self):
        services = self.d.compose["services"]
        self.collect("funnel-server", services["server-cpu"]["command"],
                     services["gateway"]["command"])


if __name__ == "__main__":
    unittest.main()
