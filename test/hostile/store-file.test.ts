// The SQLite state file removed while the bus runs: the bus notices within its probe interval and refuses writes
// (a write it cannot record could run twice), reads keep flowing, and the log says why.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type BusProcess, LAB_SERVER, startBus, tempDir } from '../helpers/bus-process.js';
import { AgentClient, busErrorStrict } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';

const dir = tempDir();
const stateDir = join(dir, 'state');
let bus: BusProcess;

describe('state file removed while running', () => {
  before(async () => {
    bus = await startBus(
      `
store: { kind: sqlite, path: ${join(stateDir, 'state.db')} }
agents:
  - { id: a, token: "agent-a-token-1" }
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    tools:
      echo: { kind: read }
      counter_incr: { kind: write, lease: ["c:{/entity}"] }
`,
      { cwd: dir },
    );
  });
  after(async () => {
    await bus?.stop();
  });

  it('refuses writes with store_unavailable once the file is gone, and keeps serving reads', async () => {
    const a = new AgentClient(bus.url, 'agent-a-token-1');
    const ok = await a.call('lab__counter_incr', { entity: 'before', idempotency_key: 'before-removal-1' });
    assert.equal(ok.isError, undefined);
    rmSync(stateDir, { recursive: true, force: true });
    await waitFor(
      async () => {
        const r = await a.call('lab__counter_incr', {
          entity: 'after',
          idempotency_key: `after-removal-${Date.now()}`,
        });
        return r.isError === true && busErrorStrict(r).category === 'store_unavailable';
      },
      5000,
      'writes refused',
    );
    const read = await a.call('lab__echo', { text: 'reads flow' });
    assert.equal(read.content?.[0]?.text, 'reads flow');
    assert.match(bus.stderr(), /removed or replaced|no longer ours/);
  });
});
