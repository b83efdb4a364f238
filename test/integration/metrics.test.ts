// /metrics in Prometheus text: calls by tool and outcome, latency, replays, upstream state; no secret anywhere.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { type BusProcess, LAB_SERVER, startBus, tempDir } from '../helpers/bus-process.js';
import { AgentClient } from '../helpers/mcp-http.js';

const SECRET = `metrics-secret-${Math.random().toString(36).slice(2)}`;

describe('/metrics', () => {
  let bus: BusProcess;
  before(async () => {
    bus = await startBus(
      `
store: { kind: memory }
agents: [{ id: a, token: "metrics-token-1" }]
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    env: { SOME_SECRET: "\${env:METRICS_TEST_SECRET}" }
    tools:
      echo: { kind: read }
      slow: { kind: read }
      counter_incr: { kind: write, lease: ["c:{/entity}"] }
`,
      { cwd: tempDir(), env: { METRICS_TEST_SECRET: SECRET } },
    );
  });
  after(async () => {
    await bus?.stop();
  });

  it('counts calls by tool and outcome, replays and latency, and shows upstream state, without secrets', async () => {
    const a = new AgentClient(bus.url, 'metrics-token-1');
    await a.call('lab__echo', { text: 'ok' });
    await a.call('lab__echo', {});
    await a.call('lab__counter_incr', { entity: 'm', idempotency_key: 'metrics-key-0001' });
    await a.call('lab__counter_incr', { entity: 'm', idempotency_key: 'metrics-key-0001' });
    const res = await fetch(bus.url.replace('/mcp', '/metrics'));
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /text\/plain/);
    const text = await res.text();
    assert.match(text, /toolbus_calls_total\{tool="lab__echo",outcome="ok"\} 1/);
    assert.match(text, /toolbus_calls_total\{tool="lab__echo",outcome="validation"\} 1/);
    assert.match(text, /toolbus_calls_total\{tool="lab__counter_incr",outcome="replayed"\} 1/);
    assert.match(text, /toolbus_replays_total\{tool="lab__counter_incr"\} 1/);
    assert.match(text, /toolbus_call_duration_seconds_bucket\{le="0\.005",tool="lab__echo"\}/);
    assert.match(text, /toolbus_upstream_up\{upstream="lab"\} 1/);
    assert.match(text, /toolbus_lease_wait_seconds_count\{upstream="lab"\} 1/);
    // Live gauges are set at scrape time.
    assert.match(text, /toolbus_calls_in_flight\{upstream="lab"\} 0/);
    assert.match(text, /toolbus_queue_depth\{upstream="lab"\} 0/);
    assert.match(text, /^toolbus_agent_sessions 0$/m);
    assert.ok(!text.includes(SECRET));
    assert.ok(!text.includes('metrics-token-1'));
    assert.ok(!text.includes('metrics-key-0001'), 'keys are not metric labels');
  });

  it('the live gauges follow calls in flight and open sessions', async () => {
    const a = new AgentClient(bus.url, 'metrics-token-1');
    await a.initialize();
    const slow = Promise.all([1, 2, 3].map((i) => a.call('lab__slow', { ms: 800, tag: `g${i}` })));
    const scrape = async () => (await fetch(bus.url.replace('/mcp', '/metrics'))).text();
    let text = '';
    for (let i = 0; i < 40; i++) {
      text = await scrape();
      if (/toolbus_calls_in_flight\{upstream="lab"\} 3/.test(text)) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    assert.match(text, /toolbus_calls_in_flight\{upstream="lab"\} 3/);
    assert.match(text, /^toolbus_agent_sessions 1$/m);
    await slow;
    assert.match(await scrape(), /toolbus_calls_in_flight\{upstream="lab"\} 0/);
  });
});
