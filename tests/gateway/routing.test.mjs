// Routing across two real funnel-server replicas (r0, r1) behind one funnel-gateway: plain
// requests reach both, session requests reach the replica that owns the session, and when a
// replica dies its plain traffic moves to the other while its sessions answer 503.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import OpenAI from 'openai';

import { FunnelGateway, FunnelServer, MODEL_NAME, skipReason } from './harness.mjs';

const skip = skipReason();

// Requests a server finished (its end-to-end latency histogram count).
async function finished(server) {
  return (await server.metrics())['funnel:e2e_request_latency_seconds_count'] ?? 0;
}

describe('routing over two replicas', { skip: skip || false }, () => {
  let servers;
  let gateway;
  let client;

  before(async () => {
    servers = await Promise.all(['r0', 'r1'].map((id) => new FunnelServer({ replicaId: id }).ready()));
    gateway = await new FunnelGateway({ servers }).ready();
    client = new OpenAI({ baseURL: `${gateway.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });

  after(async () => {
    await gateway?.stop();
    for (const s of servers ?? []) await s.stop();
  });

  const complete = (extra = {}) => client.completions.create({
    model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: 2, temperature: 0, ...extra,
  });

  test('plain requests reach both replicas', async () => {
    const before0 = await finished(servers[0]);
    const before1 = await finished(servers[1]);
    for (let i = 0; i < 6; i += 1) await complete();
    const served0 = (await finished(servers[0])) - before0;
    const served1 = (await finished(servers[1])) - before1;
    assert.equal(served0 + served1, 6);
    assert.ok(served0 >= 1 && served1 >= 1, `${served0} / ${served1}`);
  });

  test('sessions live on one replica and every request for them goes there', async () => {
    const sessions = {};
    for (let i = 0; i < 4 && Object.keys(sessions).length < 2; i += 1) {
      const s = await client.post('/sessions', {
        body: { model: MODEL_NAME, prompt: 'Once upon a time, there was a cat named Tom.' },
      });
      sessions[s.id.split('-')[1]] = s;
    }
    assert.deepEqual(Object.keys(sessions).sort(), ['r0', 'r1']);
    for (const [replica, session] of Object.entries(sessions)) {
      const owner = servers.find((s) => s.replicaId === replica);
      const before = await finished(owner);
      for (let i = 0; i < 3; i += 1) {
        const r = await complete({ prompt: ' He', session_id: session.id });
        assert.equal(r.usage.prompt_tokens_details.cached_tokens, session.tokens);
      }
      assert.equal((await finished(owner)) - before, 3);
      const got = await client.get(`/sessions/${session.id}`);
      assert.equal(got.id, session.id);
    }
    const list = await client.get('/sessions');
    assert.equal(list.data.length, 2);
  });

  test('a dead replica: plain traffic moves, its sessions are 503, the others still work', async () => {
    const r1Session = await (async () => {
      for (let i = 0; i < 4; i += 1) {
        const s = await client.post('/sessions', { body: { model: MODEL_NAME, prompt: 'Tom' } });
        if (s.id.startsWith('sess-r1-')) return s;
      }
      throw new Error('no session landed on r1');
    })();
    const r0Session = (await client.get('/sessions')).data.find((s) => s.id.startsWith('sess-r0-'));
    assert.ok(r0Session);
    await servers[1].kill();
    const before0 = await finished(servers[0]);
    for (let i = 0; i < 4; i += 1) {
      const r = await complete();
      assert.equal(r.choices.length, 1);
    }
    assert.equal((await finished(servers[0])) - before0, 4);
    const m = await gateway.metrics();
    assert.equal(m[`funnel_gateway:backend_up{backend="${servers[1].address}"}`], 0);
    assert.equal(m[`funnel_gateway:backend_up{backend="${servers[0].address}"}`], 1);
    await assert.rejects(complete({ prompt: ' He', session_id: r1Session.id }),
      (e) => e.status === 503);
    const ok = await complete({ prompt: ' He', session_id: r0Session.id });
    assert.equal(ok.usage.prompt_tokens_details.cached_tokens, r0Session.tokens);
    const health = await (await fetch(`${gateway.url}/health`)).json();
    assert.equal(health.backends_up, 1);
  });
});
