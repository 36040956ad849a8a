// The official OpenAI Node SDK (openai@^6) against funnel-gateway in front of a real
// funnel-server (stories260K), both with API keys: models, completions (checked against
// llama2.c's greedy text), chat with and without streaming, logprobs, n > 1 with seeds, a session
// round trip, 401, 404, 400, and aborting a stream (the server frees the request).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import OpenAI from 'openai';

import {
  FunnelGateway, FunnelServer, GREEDY_REFERENCE, MODEL_NAME, keyFile, skipReason, waitFor,
} from './harness.mjs';

const KEYS = ['sk-test-one', 'sk-test-two'];
const skip = skipReason();

describe('OpenAI SDK against funnel-gateway', { skip: skip || false }, () => {
  let server;
  let gateway;
  let client;
  let idleKvUsage;

  before(async () => {
    const keys = keyFile(KEYS);
    // A small KV pool, so one long request holds a visible part of it.
    server = await new FunnelServer({ args: ['--api-key-file', keys, '--kv-cache-bytes', '4M'] })
      .ready();
    gateway = await new FunnelGateway({ servers: [server], args: ['--api-key-file', keys] })
      .ready();
    client = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: KEYS[0], maxRetries: 0 });
    idleKvUsage = (await server.metrics())['funnel:kv_cache_usage_perc'];
  });

  after(async () => {
    await gateway?.stop();
    await server?.stop();
  });

  test('models.list names the served model', async () => {
    const models = await client.models.list();
    const ids = models.data.map((m) => m.id);
    assert.deepEqual(ids, [MODEL_NAME]);
    assert.equal(models.data[0].object, 'model');
    const one = await client.models.retrieve(MODEL_NAME);
    assert.equal(one.id, MODEL_NAME);
  });

  test('completions: greedy text is llama2.c\'s reference continuation', async () => {
    const prompt = 'Once upon a time';
    const r = await client.completions.create({
      model: MODEL_NAME, prompt, max_tokens: 24, temperature: 0, ignore_eos: true,
    });
    const reference = fs.readFileSync(GREEDY_REFERENCE, 'utf8');
    assert.equal(r.object, 'text_completion');
    assert.equal(r.choices.length, 1);
    assert.ok(r.choices[0].text.length > 20, r.choices[0].text);
    assert.ok(reference.startsWith(prompt + r.choices[0].text),
      `not a prefix of the reference: ${JSON.stringify(r.choices[0].text)}`);
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage.completion_tokens, 24);
    assert.equal(r.usage.prompt_tokens, 5);  // BOS + 4 tokens ([1, 403, 407, 261, 378])
    assert.equal(r.usage.total_tokens, 29);
  });

  test('chat: streamed and non-streamed greedy answers agree', async () => {
    const request = {
      model: MODEL_NAME,
      messages: [{ role: 'system', content: 'Tell stories.' }, { role: 'user', content: 'A cat' }],
      max_tokens: 8, temperature: 0, ignore_eos: true,
    };
    const whole = await client.chat.completions.create(request);
    assert.equal(whole.object, 'chat.completion');
    const message = whole.choices[0].message;
    assert.equal(message.role, 'assistant');
    assert.ok(message.content.length > 0);
    assert.equal(whole.choices[0].finish_reason, 'length');
    assert.equal(whole.usage.completion_tokens, 8);
    assert.ok(whole.usage.prompt_tokens > 5);  // the chatml template around the messages

    const stream = await client.chat.completions.create({
      ...request, stream: true, stream_options: { include_usage: true },
    });
    let text = '';
    let role = null;
    let finish = null;
    let usage = null;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      assert.equal(chunk.object, 'chat.completion.chunk');
      assert.equal(chunk.model, MODEL_NAME);
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        if (choice.delta.role) role = choice.delta.role;
        text += choice.delta.content ?? '';
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    assert.equal(role, 'assistant');
    assert.equal(text, message.content);
    assert.equal(finish, 'length');
    assert.ok(chunks >= 10, `${chunks} chunks`);  // role + tokens + finish + usage
    assert.equal(usage.completion_tokens, 8);
    assert.equal(usage.prompt_tokens, whole.usage.prompt_tokens);
  });

  test('chat logprobs: greedy tokens are the most likely of their top_logprobs', async () => {
    const r = await client.chat.completions.create({
      model: MODEL_NAME, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 5,
      temperature: 0, ignore_eos: true, logprobs: true, top_logprobs: 3,
    });
    const content = r.choices[0].logprobs.content;
    assert.equal(content.length, 5);
    for (const entry of content) {
      assert.equal(typeof entry.token, 'string');
      assert.ok(entry.logprob <= 0);
      assert.deepEqual(entry.bytes, [...Buffer.from(entry.token, 'utf8')]);
      assert.equal(entry.top_logprobs.length, 3);
      const best = Math.max(...entry.top_logprobs.map((t) => t.logprob));
      assert.ok(Math.abs(entry.logprob - best) < 1e-6, `${entry.logprob} vs ${best}`);
    }
    assert.equal(content.map((e) => e.token).join(''), r.choices[0].message.content);
  });

  test('n > 1: indexed choices; choice i uses seed + i', async () => {
    const request = {
      model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: 12, temperature: 1,
      ignore_eos: true,
    };
    const a = await client.completions.create({ ...request, n: 2, seed: 42 });
    const b = await client.completions.create({ ...request, n: 2, seed: 42 });
    const c = await client.completions.create({ ...request, n: 1, seed: 43 });
    assert.deepEqual(a.choices.map((x) => x.index), [0, 1]);
    assert.deepEqual(a.choices.map((x) => x.text), b.choices.map((x) => x.text));
    assert.equal(c.choices[0].text, a.choices[1].text);
    assert.equal(a.usage.completion_tokens, 24);
    assert.equal(a.usage.prompt_tokens, 5);  // counted once
  });

  test('sessions: create, use (cached tokens), get, list, delete', async () => {
    // About 70 tokens: more than any layer's budget keeps.
    const document = fs.readFileSync(GREEDY_REFERENCE, 'utf8').slice(0, 300);
    const session = await client.post('/sessions', {
      body: {
        model: MODEL_NAME, prompt: document, ttl_seconds: 600,
        kv_compression: { method: 'pyramidkv', budget: 16, window: 4 },
      },
    });
    assert.match(session.id, /^sess-r0-[0-9a-f]{16}$/);
    assert.equal(session.object, 'session');
    assert.ok(session.tokens > 10);
    assert.ok(session.kv_bytes > 0);
    assert.equal(session.kv_compression.method, 'pyramidkv');
    assert.equal(session.per_layer_tokens.length, 5);  // stories260K has 5 layers
    assert.ok(Math.max(...session.per_layer_tokens) < session.tokens);  // compressed

    const r = await client.completions.create({
      model: MODEL_NAME, prompt: ' Lily', max_tokens: 6, temperature: 0, ignore_eos: true,
      session_id: session.id,
    });
    assert.equal(r.usage.completion_tokens, 6);
    assert.equal(r.usage.prompt_tokens_details.cached_tokens, session.tokens);
    assert.ok(r.usage.prompt_tokens > session.tokens);

    const got = await client.get(`/sessions/${session.id}`);
    assert.equal(got.id, session.id);
    assert.equal(got.tokens, session.tokens);
    const list = await client.get('/sessions');
    assert.ok(list.data.some((s) => s.id === session.id));
    // Sessions are per key: the other key neither sees nor uses this one.
    const other = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: KEYS[1], maxRetries: 0 });
    await assert.rejects(other.get(`/sessions/${session.id}`), (e) => e.status === 404);

    const deleted = await client.delete(`/sessions/${session.id}`);
    assert.equal(deleted.deleted, true);
    await assert.rejects(client.get(`/sessions/${session.id}`), (e) => e.status === 404);
  });

  test('401 for a wrong key, before any backend work', async () => {
    const wrong = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (e) => {
      assert.ok(e instanceof OpenAI.AuthenticationError, e.constructor.name);
      assert.equal(e.status, 401);
      assert.equal(e.code, 'invalid_api_key');
      return true;
    });
  });

  test('404 for an unknown session and an unknown model', async () => {
    await assert.rejects(
      client.completions.create({
        model: MODEL_NAME, prompt: 'x', session_id: 'sess-r0-0000000000000000',
      }),
      (e) => e instanceof OpenAI.NotFoundError && e.status === 404);
    await assert.rejects(
      client.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] }),
      (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
  });

  test('400 for bad input; the gateway keeps serving', async () => {
    await assert.rejects(
      client.chat.completions.create({
        model: MODEL_NAME, messages: [{ role: 'user', content: 'x' }], temperature: 'hot',
      }),
      (e) => e instanceof OpenAI.BadRequestError && e.param === 'temperature');
    await assert.rejects(
      client.chat.completions.create({ model: MODEL_NAME, messages: [] }),
      (e) => e.status === 400 && e.param === 'messages');
    // The server's own validation comes back as 400 too.
    await assert.rejects(
      client.completions.create({ model: MODEL_NAME, prompt: 'x', temperature: -1 }),
      (e) => e.status === 400 && /temperature/.test(e.message));
    const malformed = await fetch(`${gateway.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${KEYS[0]}`, 'content-type': 'application/json' },
      body: '{"model": "stories260K", "messages": [',
    });
    assert.equal(malformed.status, 400);
    const body = await malformed.json();
    assert.equal(body.error.type, 'invalid_request_error');
    const ok = await client.completions.create({ model: MODEL_NAME, prompt: 'x', max_tokens: 1 });
    assert.equal(ok.choices.length, 1);
  });

  test('aborting a stream cancels the request on the server and frees its KV blocks', async () => {
    const controller = new AbortController();
    const stream = await client.completions.create({
      model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: 1900, temperature: 0,
      ignore_eos: true, stream: true,
    }, { signal: controller.signal });
    let id = null;
    let received = 0;
    try {
      for await (const chunk of stream) {
        id = chunk.id;
        received += 1;
        if (received === 3) {
          // Mid-stream the request holds KV blocks on the server.
          const m = await server.metrics();
          assert.equal(m['funnel:num_requests_running'], 1);
          assert.ok(m['funnel:kv_cache_usage_perc'] > idleKvUsage);
          controller.abort();
          break;  // chunks already buffered would still be yielded
        }
      }
    } catch (e) {
      // The SDK ends an aborted stream quietly, or with its abort error.
      if (!(e instanceof OpenAI.APIUserAbortError) && e.name !== 'AbortError') throw e;
    }
    assert.equal(received, 3);
    // The gateway cancelled its upstream call: the server logs the cancellation of exactly that
    // request (a natural end would log "ok finish=length"), and its blocks return to the pool.
    const upstream = `request ${id}-0 `;
    const line = await waitFor(() => server.log().split('\n').find(
      (l) => l.includes(upstream) && /cancelled by the client|client gone/.test(l)),
    `the server to log the cancellation of ${upstream}`);
    assert.ok(!/finish=length/.test(line), line);
    await waitFor(async () => {
      const m = await server.metrics();
      return m['funnel:num_requests_running'] === 0
        && m['funnel:kv_cache_usage_perc'] === idleKvUsage;
    }, 'the server to free the request');
    await waitFor(async () => (await gateway.metrics())['funnel_gateway:stream_disconnects_total'] >= 1,
      'the gateway to count the disconnect');
  });
});
