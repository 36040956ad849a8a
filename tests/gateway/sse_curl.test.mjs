// curl against funnel-gateway (open access) in front of a real funnel-server: the raw bytes of
// the Server-Sent Events stream (headers, chunked transfer, "data: " framing, blank-line
// separators, finish and usage chunks, the final [DONE]), incremental delivery, errors before
// the first token as plain HTTP errors, and a curl that goes away mid-stream.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';

import {
  FunnelGateway, FunnelServer, MODEL_NAME, skipReason, waitFor,
} from './harness.mjs';

const run = promisify(execFile);
const CURL = process.env.FUNNEL_CURL || 'curl';
const skip = skipReason();

const bodies = fs.mkdtempSync(path.join(os.tmpdir(), 'funnel-gw-curl-'));
process.on('exit', () => fs.rmSync(bodies, { recursive: true, force: true }));
let bodyCount = 0;

// curl -i: {status, headers (lower-case names), body} of one POST. `body` (a string or raw
// bytes) goes through a file, so bytes that are not UTF-8 reach the gateway as they are.
async function curl(url, body, extra = []) {
  const file = path.join(bodies, `body-${bodyCount++}`);
  fs.writeFileSync(file, body);
  const args = ['-sS', '-i', '-N', '-X', 'POST', '-H', 'Content-Type: application/json',
    '--data-binary', `@${file}`, ...extra, url];
  const { stdout } = await run(CURL, args, { maxBuffer: 64 << 20 });
  let text = stdout;
  // Skip an interim "100 Continue" response.
  while (text.startsWith('HTTP/1.1 100')) text = text.slice(text.indexOf('\r\n\r\n') + 4);
  const split = text.indexOf('\r\n\r\n');
  const head = text.slice(0, split).split('\r\n');
  const status = Number(head[0].split(' ')[1]);
  const headers = {};
  for (const line of head.slice(1)) {
    const colon = line.indexOf(':');
    headers[line.slice(0, colon).toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status, headers, body: text.slice(split + 4) };
}

// The events of an SSE body; asserts the framing of every one.
function events(body) {
  assert.ok(body.endsWith('data: [DONE]\n\n'), `no final [DONE]: ${JSON.stringify(body.slice(-80))}`);
  const blocks = body.slice(0, -2).split('\n\n');
  return blocks.map((block) => {
    assert.ok(block.startsWith('data: '), `bad event: ${JSON.stringify(block)}`);
    assert.ok(!block.includes('\n'), `multi-line event: ${JSON.stringify(block)}`);
    const payload = block.slice(6);
    return payload === '[DONE]' ? '[DONE]' : JSON.parse(payload);
  });
}

describe('raw SSE from funnel-gateway', { skip: skip || false }, () => {
  let server;
  let gateway;

  before(async () => {
    server = await new FunnelServer({ args: ['--kv-cache-bytes', '4M'] }).ready();
    gateway = await new FunnelGateway({ servers: [server], args: ['--max-body-bytes', '64K'] })
      .ready();
  });

  after(async () => {
    await gateway?.stop();
    await server?.stop();
  });

  test('chat stream: headers, framing, one role chunk, finish, usage, [DONE]', async () => {
    const r = await curl(`${gateway.url}/v1/chat/completions`, JSON.stringify({
      model: MODEL_NAME, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 6,
      temperature: 0, ignore_eos: true, stream: true, stream_options: { include_usage: true },
    }), ['-H', 'Accept-Encoding: gzip, br']);
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'text/event-stream');
    assert.equal(r.headers['transfer-encoding'], 'chunked');
    assert.equal(r.headers['cache-control'], 'no-cache');
    assert.equal(r.headers['content-encoding'], undefined);  // never compressed
    const ev = events(r.body);
    const chunks = ev.slice(0, -1);
    const id = chunks[0].id;
    assert.match(id, /^chatcmpl-[0-9a-f]{16}$/);
    assert.equal(r.headers['x-request-id'], id);
    for (const c of chunks) {
      assert.equal(c.id, id);
      assert.equal(c.object, 'chat.completion.chunk');
    }
    assert.deepEqual(chunks[0].choices[0].delta, { role: 'assistant', content: '' });
    const finishes = chunks.filter((c) => c.choices[0]?.finish_reason);
    assert.equal(finishes.length, 1);
    assert.equal(finishes[0].choices[0].finish_reason, 'length');
    const usage = chunks.at(-1);
    assert.deepEqual(usage.choices, []);
    assert.equal(usage.usage.completion_tokens, 6);
    assert.equal(usage.usage.total_tokens, usage.usage.prompt_tokens + 6);
    for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null);
  });

  test('completions stream with n = 2: every choice streams and finishes', async () => {
    const r = await curl(`${gateway.url}/v1/completions`, JSON.stringify({
      model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: 4, temperature: 0,
      ignore_eos: true, n: 2, stream: true, logprobs: 1,
    }));
    assert.equal(r.status, 200);
    const chunks = events(r.body).slice(0, -1);
    const text = ['', ''];
    const finished = [0, 0];
    for (const c of chunks) {
      assert.equal(c.object, 'text_completion');
      assert.equal(c.usage, undefined);
      const choice = c.choices[0];
      text[choice.index] += choice.text;
      if (choice.finish_reason) finished[choice.index] += 1;
      else assert.equal(choice.logprobs.tokens.length, 1);
    }
    assert.deepEqual(finished, [1, 1]);
    assert.equal(text[0], text[1]);  // greedy
    assert.ok(text[0].startsWith(', there was'), text[0]);  // llama2.c's greedy continuation
  });

  test('errors before the first token are plain HTTP errors, not event streams', async () => {
    const bad = await curl(`${gateway.url}/v1/completions`,
      JSON.stringify({ model: MODEL_NAME, prompt: 'x', stream: true, top_p: 7 }));
    assert.equal(bad.status, 400);
    assert.match(bad.headers['content-type'], /^application\/json/);
    assert.ok(JSON.parse(bad.body).error.message.length > 0);
    const malformed = await curl(`${gateway.url}/v1/completions`, '{"stream": true');
    assert.equal(malformed.status, 400);
    const big = await curl(`${gateway.url}/v1/completions`, JSON.stringify({
      model: MODEL_NAME, prompt: 'x'.repeat(70_000), stream: true,
    }));
    assert.equal(big.status, 413);
    assert.equal(JSON.parse(big.body).error.code, 'request_too_large');
    const invalidUtf8 = await curl(`${gateway.url}/v1/completions`,
      Buffer.concat([Buffer.from('{"model": "stories260K", "prompt": "'),
        Buffer.from([0xff, 0xfe]), Buffer.from('"}')]));
    assert.equal(invalidUtf8.status, 400);
    assert.match(JSON.parse(invalidUtf8.body).error.message, /UTF-8/);
  });

  test('tokens arrive while the generation runs; a curl that leaves cancels it', async () => {
    const child = spawn(CURL, ['-sS', '-N', '-X', 'POST', '-H', 'Content-Type: application/json',
      '--data-binary', JSON.stringify({
        model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: 1900, temperature: 0,
        ignore_eos: true, stream: true,
      }), `${gateway.url}/v1/completions`]);
    let received = '';
    child.stdout.on('data', (d) => { received += d; });
    await waitFor(() => received.includes('\n\n'), 'the first event');
    // The first event is here and the server is still generating: delivery is incremental.
    const running = (await server.metrics())['funnel:num_requests_running'];
    assert.equal(running, 1);
    assert.ok(!received.includes('[DONE]'));
    const id = JSON.parse(received.slice(6, received.indexOf('\n\n'))).id;
    child.kill('SIGKILL');
    await waitFor(() => server.log().split('\n').some(
      (l) => l.includes(`request ${id}-0 `) && /cancelled by the client|client gone/.test(l)),
    'the server to log the cancellation');
    await waitFor(async () => (await server.metrics())['funnel:num_requests_running'] === 0,
      'the server to free the request');
  });
});
