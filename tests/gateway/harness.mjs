// Runs real funnel-server and funnel-gateway processes on 127.0.0.1 for the gateway tests.
//
// Every process listens on an ephemeral port (--port 0) and reports it through a port file;
// every wait is bounded; every process is killed when the test file ends (SIGTERM, then
// SIGKILL). Environment (set by ctest, see CMakeLists.txt): FUNNEL_SERVER, FUNNEL_GATEWAY, and
// FUNNEL_SHARED_DATA (optional) or FUNNEL_SHARED_DATA_DEFAULT.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const START_TIMEOUT_MS = 60_000;

export const SERVER = process.env.FUNNEL_SERVER ?? '';
export const GATEWAY = process.env.FUNNEL_GATEWAY ?? '';
const SHARED = process.env.FUNNEL_SHARED_DATA || process.env.FUNNEL_SHARED_DATA_DEFAULT || '';
export const MODEL = path.join(SHARED, 'models/stories260K/stories260K.gguf');
// llama2.c's greedy continuation of "Once upon a time" (an independent reference).
export const GREEDY_REFERENCE = path.join(SHARED, 'models/stories260K/stories260K.greedy.t0.n256.txt');
export const MODEL_NAME = 'stories260K';

// Why the tests cannot run here, or '' when they can.
export function skipReason() {
  if (!SERVER || !fs.existsSync(SERVER)) return 'FUNNEL_SERVER is not a built funnel-server';
  if (!GATEWAY || !fs.existsSync(GATEWAY)) return 'FUNNEL_GATEWAY is not a built funnel-gateway';
  if (!fs.existsSync(MODEL)) return `no model at ${MODEL}`;
  return '';
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Polls `predicate` (sync or async) until it returns a truthy value (returned) or the time is
// up (throws, naming `what`).
export async function waitFor(predicate, what, timeoutMs = 20_000, intervalMs = 25) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await predicate();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() >= deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await sleep(intervalMs);
  }
}

// Prometheus text → {sample name with labels: number}.
export function parseMetrics(text) {
  const samples = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    samples[line.slice(0, space)] = Number(line.slice(space + 1));
  }
  return samples;
}

const live = new Set();
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

class Process {
  constructor(name, binary, args) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `funnel-gw-${name}-`));
    this.portFile = path.join(this.dir, 'port');
    this.logPath = path.join(this.dir, `${name}.log`);
    const fd = fs.openSync(this.logPath, 'a');
    this.child = spawn(binary, args(this), { stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    this.exited = false;
    this.child.on('exit', () => {
      this.exited = true;
      live.delete(this.child);
    });
    live.add(this.child);
  }

  log() {
    try {
      return fs.readFileSync(this.logPath, 'utf8');
    } catch {
      return '';
    }
  }

  async readPort(file) {
    const text = await waitFor(() => {
      if (this.exited) throw new Error(`exited early:\n${this.log()}`);
      return fs.existsSync(file) && fs.readFileSync(file, 'utf8').trim();
    }, `${file}`, START_TIMEOUT_MS);
    return Number(text);
  }

  // SIGKILL: the replica vanishes without draining.
  async kill() {
    if (this.exited) return;
    this.child.kill('SIGKILL');
    await waitFor(() => this.exited, 'exit after SIGKILL', 15_000);
  }

  async stop() {
    if (!this.exited) {
      this.child.kill('SIGTERM');
      try {
        await waitFor(() => this.exited, 'exit after SIGTERM', 15_000);
      } catch {
        await this.kill();
      }
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// A funnel-server on stories260K (chatml template, served as "stories260K").
export class FunnelServer extends Process {
  constructor({ replicaId = 'r0', args = [] } = {}) {
    super(`server-${replicaId}`, SERVER, (p) => {
      p.adminPortFile = path.join(p.dir, 'admin-port');
      return ['--model', MODEL, '--host', '127.0.0.1', '--port', '0', '--port-file', p.portFile,
        '--admin-port', '0', '--admin-port-file', p.adminPortFile, '--threads', '1',
        '--served-model-name', MODEL_NAME, '--chat-template', 'chatml',
        '--replica-id', replicaId, ...args];
    });
    this.replicaId = replicaId;
  }

  async ready() {
    this.port = await this.readPort(this.portFile);
    this.adminPort = await this.readPort(this.adminPortFile);
    this.address = `127.0.0.1:${this.port}`;
    return this;
  }

  async metrics() {
    const r = await fetch(`http://127.0.0.1:${this.adminPort}/metrics`);
    return parseMetrics(await r.text());
  }
}

// A funnel-gateway in front of `servers`; ready once /health says a backend is up.
export class FunnelGateway extends Process {
  constructor({ servers, args = [], healthyBackends = servers.length }) {
    super('gateway', GATEWAY, (p) => {
      const backends = servers.flatMap((s) => ['--backend', s.address]);
      return [...backends, '--host', '127.0.0.1', '--port', '0', '--port-file', p.portFile,
        '--probe-interval', '0.2', '--max-probe-backoff', '0.5', ...args];
    });
    this.healthyBackends = healthyBackends;
  }

  async ready() {
    this.port = await this.readPort(this.portFile);
    this.url = `http://127.0.0.1:${this.port}`;
    await waitFor(async () => {
      const r = await fetch(`${this.url}/health`);
      const body = await r.json();
      return r.status === 200 && body.backends_up === this.healthyBackends;
    }, 'gateway /health', START_TIMEOUT_MS);
    return this;
  }

  async metrics() {
    const r = await fetch(`${this.url}/metrics`);
    return parseMetrics(await r.text());
  }
}

// Writes a key file (one key per line) into a fresh temporary folder; returns its path.
export function keyFile(keys) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'funnel-gw-keys-'));
  const file = path.join(dir, 'keys');
  fs.writeFileSync(file, `# test keys\n${keys.join('\n')}\n`);
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return file;
}
