// The dashboard in a real headless browser (Debian's Chromium driven by playwright-core) against the real bus:
// agents and sessions, upstream state, leases with their waiters, and recent replays appear as they happen.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Browser, chromium, type Page } from 'playwright-core';
import { type BusProcess, LAB_SERVER, startBus, tempDir } from '../helpers/bus-process.js';
import { labStarts } from '../helpers/lab.js';
import { AgentClient } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';

const CHROMIUM = '/usr/bin/chromium';
const dir = tempDir();
const labLog = join(dir, 'lab.log');
/** The admin sees lease scopes in clear; the page takes the token from its fragment. */
const ADMIN_TOKEN = 'dash-admin-token-0123456789';

describe('dashboard in a real browser', () => {
  let bus: BusProcess;
  let browser: Browser | undefined;
  let page: Page;
  before(async () => {
    if (!existsSync(CHROMIUM)) {
      if (process.env.CI) throw new Error(`${CHROMIUM} is missing; .ci/run installs Debian's chromium`);
      console.warn(`\n*** SKIPPING dashboard browser tests: no ${CHROMIUM} (apt-get install chromium) ***\n`);
      return;
    }
    bus = await startBus(
      `
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
logging: { level: warn }
server: { adminToken: ${ADMIN_TOKEN} }
agents:
  - { id: planner, token: "dash-token-1", tenant: team-a, weight: 2 }
  - { id: worker, token: "dash-token-2", tenant: team-a }
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    env: { LAB_LOG: ${labLog} }
    tools:
      slow: { kind: write, lease: ["s:{/tag}"] }
      counter_incr: { kind: write, lease: ["c:{/entity}"] }
`,
      { cwd: dir },
    );
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    page = await browser.newPage();
    await page.goto(`${bus.url.replace('/mcp', '/')}#token=${ADMIN_TOKEN}`);
  });
  after(async () => {
    await browser?.close();
    await bus?.stop();
  });

  const cells = (table: string) => page.locator(`#${table} tbody tr`).allInnerTexts();

  it('lists the configured agents and the upstream with its process', async (t) => {
    if (!browser) return t.skip('no chromium');
    await page.locator('#agents tbody tr').first().waitFor({ timeout: 5000 });
    const agents = await cells('agents');
    assert.ok(agents.some((r) => r.includes('planner') && r.includes('team-a') && r.includes('2')));
    assert.ok(agents.some((r) => r.includes('worker')));
    await waitFor(
      async () =>
        (await cells('upstreams')).some(
          (r) => /lab\s+ready\s+\d+/.test(r) && /shared · 1 of \d+ sessions/.test(r) && /2025-11-25/.test(r),
        ),
      5000,
      'upstream row ready with a pid, its sharing and the protocol revision it speaks',
    );
  });

  it('shows a session opening, and a lease held with a writer waiting for it', async (t) => {
    if (!browser) return t.skip('no chromium');
    const planner = new AgentClient(bus.url, 'dash-token-1');
    await planner.initialize();
    await waitFor(
      async () => (await cells('agents')).some((r) => /planner\s+team-a\s+2\s+1/.test(r)),
      5000,
      'one session for planner',
    );
    const holder = planner.call('lab__slow', { ms: 2500, tag: 'board', idempotency_key: 'dash-hold-0001' });
    await waitFor(() => labStarts(labLog, 'slow', 'board').length === 1, 5000, 'holder running');
    const waiter = new AgentClient(bus.url, 'dash-token-2').call('lab__slow', {
      ms: 10,
      tag: 'board',
      idempotency_key: 'dash-wait-0001',
    });
    // Row cells: scope, holder, fencing token, waiters. The page was opened with the admin token (#token=...), so
    // the scope is in clear; a viewer without it sees `lab:#hash` (test/hostile/requests.test.ts).
    const board = 'lab:s:board';
    const boardRow = async () =>
      (await cells('leases')).map((r) => r.split('\t').map((c) => c.trim())).find((c) => c[0] === board);
    await waitFor(async () => (await boardRow())?.[3] === '1', 5000, 'lease row with one waiter');
    const row = (await boardRow())!;
    assert.equal(row[1], 'planner · lab__slow', 'the holder is shown as its agent and tool');
    assert.ok(
      (await cells('calls')).some((r) => r.includes('planner') && r.includes('lab__slow')),
      'the call in flight is listed',
    );
    assert.match(row[2]!, /^\d+$/, 'fencing token');
    await page.screenshot({ path: join(dir, 'dashboard.png'), fullPage: true });
    await Promise.all([holder, waiter]);
    await waitFor(async () => !(await cells('leases')).some((r) => r.includes(board)), 5000, 'lease row gone');
  });

  it('shows recent replays', async (t) => {
    if (!browser) return t.skip('no chromium');
    const a = new AgentClient(bus.url, 'dash-token-2');
    const args = { entity: 'dash', idempotency_key: 'dash-replay-0001' };
    await a.call('lab__counter_incr', args);
    const again = await a.call('lab__counter_incr', args);
    assert.equal(again._meta?.['toolbus/replayed'], true);
    await waitFor(
      async () =>
        (await cells('recent')).some(
          (r) => r.includes('worker') && r.includes('lab__counter_incr') && r.includes('replayed'),
        ),
      5000,
      'replay row',
    );
  });
});
