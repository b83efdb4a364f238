// The operator's dashboard under load, in a real headless browser: charts over time per upstream (calls/s, p50/p99,
// queue depth, lease waits) drawn as inline SVG, per-agent totals, what each call in flight is doing (waiting for a
// lease, or with the upstream), and an upstream's restarts and last error after it crashed.
// TOOLBUS_SCREENSHOT=docs/dashboard.png (and LOAD_SECONDS=N for a longer run) also saves the picture for the docs.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Browser, chromium, type Page } from 'playwright-core';
import { type BusProcess, LAB_SERVER, ROOT, startBus, tempDir } from '../helpers/bus-process.js';
import { labStarts } from '../helpers/lab.js';
import { AgentClient } from '../helpers/mcp-http.js';
import { waitFor } from '../helpers/wait.js';

const CHROMIUM = '/usr/bin/chromium';
const dir = tempDir();
const labLog = join(dir, 'lab.log');

describe('dashboard charts under load, in a real browser', () => {
  let bus: BusProcess;
  let browser: Browser | undefined;
  let page: Page;
  before(async () => {
    if (!existsSync(CHROMIUM)) {
      if (process.env.CI) throw new Error(`${CHROMIUM} is missing`);
      return;
    }
    bus = await startBus(
      `
store: { kind: sqlite, path: ${join(dir, 'state.db')} }
logging: { level: warn }
agents:
  - { id: planner, token: "chart-token-1", tenant: team-a, weight: 2 }
  - { id: worker, token: "chart-token-2", tenant: team-b }
  - { id: reporter, token: "chart-token-3", tenant: team-b }
upstreams:
  lab:
    command: ${process.execPath}
    args: [${LAB_SERVER}]
    env: { LAB_LOG: ${labLog}, LAB_STATE: ${join(dir, 'lab.json')} }
    maxConcurrency: 2
    rateLimit: { perSecond: 150, burst: 20 }
    restart: { initialDelayMs: 100, maxDelayMs: 500 }
    tools:
      echo: { kind: read }
      slow: { kind: read }
      fail: { kind: read }
      crash: { kind: write, idempotency: off, lease: [] }
      counter_incr: { kind: write, lease: ["c:{/entity}"] }
`,
      { cwd: dir },
    );
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
    });
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    await page.goto(bus.url.replace('/mcp', '/'));
  });
  after(async () => {
    await browser?.close();
    await bus?.stop();
  });

  const peak = async (chart: string) =>
    Number(await page.locator(`section[data-upstream="lab"] svg[data-chart="${chart}"]`).getAttribute('data-peak'));
  const cells = (table: string) => page.locator(`#${table} tbody tr`).allInnerTexts();

  it('draws calls/s, p50/p99, queue depth and lease waits per upstream, and per-agent totals', async (t) => {
    if (!browser) return t.skip('no chromium');
    const agents = ['chart-token-1', 'chart-token-2', 'chart-token-3'].map((tok) => new AgentClient(bus.url, tok));
    const until = Date.now() + Number(process.env.LOAD_SECONDS ?? 6) * 1000;
    let n = 0;
    const worker = async (a: AgentClient, i: number) => {
      while (Date.now() < until) {
        n++;
        if (i === 0 && n % 7 === 0) await a.call('lab__fail', { message: 'simulated tool error' });
        else if (i === 1 && n % 5 === 0) await a.call('lab__slow', { ms: 250 });
        else if (i === 2)
          await a.call('lab__counter_incr', { entity: 'hot', delay_ms: 120, idempotency_key: `chart-load-key-${n}` });
        else await a.call('lab__echo', { text: `call ${n}` });
      }
    };
    await Promise.all([0, 1, 2, 0, 1, 2].map((i, k) => worker(agents[k % 3]!, i)));
    await waitFor(async () => (await peak('rate')) > 0, 5000, 'a calls/s chart with data');
    assert.ok((await peak('latency')) > 0, 'latency chart');
    await waitFor(async () => (await peak('queue')) >= 2, 5000, 'queue chart shows calls in flight');
    assert.ok((await peak('lease')) >= 1, 'lease-wait chart');
    const rateLine = await page
      .locator('section[data-upstream="lab"] svg[data-chart="rate"] path[data-series="rate"]')
      .getAttribute('d');
    assert.match(rateLine ?? '', /^M[\d.]+ [\d.]+ L/, 'the rate is a line over time');
    const p99 = page.locator('section[data-upstream="lab"] svg[data-chart="latency"] path[data-series="p99"]');
    assert.match((await p99.getAttribute('d')) ?? '', /M/);
    await waitFor(
      async () => (await cells('agents')).some((r) => /^planner\s+team-a\s+2\s+0\s+[1-9]\d*\s+[1-9]/.test(r)),
      5000,
      'planner totals with calls and errors',
    );
    // The rate budget: the limit is drawn on the calls/s chart, and its use is in the header.
    await page
      .locator('section[data-upstream="lab"] svg[data-chart="rate"] line[data-ref="budget"]')
      .waitFor({ state: 'attached', timeout: 5000 });
    assert.match(await page.locator('section[data-upstream="lab"] h3').innerText(), /budget [\d.]+ of 150\/s \(\d+%\)/);
    if (process.env.TOOLBUS_SCREENSHOT)
      await page.screenshot({ path: resolve(ROOT, process.env.TOOLBUS_SCREENSHOT), fullPage: true });
  });

  it('shows whether a call waits for a lease or runs', async (t) => {
    if (!browser) return t.skip('no chromium');
    const holder = new AgentClient(bus.url, 'chart-token-1').call('lab__counter_incr', {
      entity: 'board',
      delay_ms: 2500,
      idempotency_key: 'chart-hold-1',
    });
    await waitFor(() => labStarts(labLog, 'counter_incr').some((e) => e.args?.entity === 'board'), 5000, 'holder');
    const waiter = new AgentClient(bus.url, 'chart-token-2').call('lab__counter_incr', {
      entity: 'board',
      idempotency_key: 'chart-wait-1',
    });
    await waitFor(
      async () => {
        const rows = await cells('calls');
        return (
          rows.some((r) => r.startsWith('planner') && r.includes('with the upstream')) &&
          rows.some((r) => r.startsWith('worker') && r.includes('waiting for a lease'))
        );
      },
      5000,
      'holder running, waiter waiting for its lease',
    );
    await Promise.all([holder, waiter]);
  });

  it("shows an upstream's restarts and last error after it crashed", async (t) => {
    if (!browser) return t.skip('no chromium');
    await new AgentClient(bus.url, 'chart-token-1').call('lab__crash', {}).catch(() => {});
    await waitFor(
      async () =>
        (await cells('upstreams')).some(
          (r) => /^lab\s+ready/.test(r) && /\t1\t/.test(r) && r.includes('upstream connection lost'),
        ),
      10_000,
      'lab back, 1 restart, last error shown',
    );
    const header = await page.locator('section[data-upstream="lab"] h3').innerText();
    assert.match(header, /restarts 1/);
  });
});
