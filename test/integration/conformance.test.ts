// The conformance measure (issue 10) as a test: the official MCP conformance suite, both requirement sets, run by
// scripts/conformance/run.mjs against the reference upstream directly and through the real toolbus process.
//
// It pins two things. The fixture cannot rot: the reference server passes every scored scenario directly, and fails
// only the scenarios listed as its directFailures. The bus is measured, not excused: every scenario that passes
// directly passes through each bus leg, except the KNOWN_GAPS, each with its reason, all kept in one place
// (scripts/conformance/known-gaps.json, which the runner's Markdown table reads too). A new gap fails this test, and
// so does a listed gap that starts passing, so the list cannot go stale.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { ROOT, tempDir } from '../helpers/bus-process.js';

interface Gap {
  set: string;
  leg: string;
  scenario: string;
  reason: string;
}
interface LegResult {
  ok: boolean;
  unavailable?: boolean;
  passed?: number;
  failed?: number;
  failedChecks?: string[];
  firstError?: string;
}
interface Row {
  set: string;
  scenario: string;
  scored: boolean;
  reason?: string;
  results: Record<string, LegResult>;
}
interface Report {
  sets: string[];
  legs: { id: string; label: string; available: boolean }[];
  rows: Row[];
}

const LIST = JSON.parse(readFileSync(join(ROOT, 'scripts/conformance/known-gaps.json'), 'utf8')) as {
  directFailures: { scenario: string; reason: string }[];
  gaps: Gap[];
};
/** Scenarios known to pass directly and fail through the bus, each with its reason. */
export const KNOWN_GAPS: readonly Gap[] = LIST.gaps;
const DIRECT_FAILURES = new Set(LIST.directFailures.map((f) => f.scenario));

const matches = (g: Gap, set: string, leg: string, scenario: string) =>
  g.leg === leg && (g.set === '*' || g.set === set) && (g.scenario === '*' || g.scenario === scenario);

function runConformance(json: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(
      process.execPath,
      [join(ROOT, 'scripts/conformance/run.mjs'), '--json', json, '--no-markdown', '--jobs', '4'],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      output += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      output += d;
    });
    // Bounded: the whole measure takes well under a minute; a hang must not hold CI.
    const timer = setTimeout(() => child.kill('SIGKILL'), 150_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe('conformance: the reference upstream directly and through toolbus', { timeout: 180_000 }, () => {
  let report: Report;
  before(async () => {
    const json = join(tempDir('toolbus-conformance-'), 'conformance.json');
    const { code, output } = await runConformance(json);
    assert.equal(code, 0, `the runner failed:\n${output}`);
    report = JSON.parse(readFileSync(json, 'utf8')) as Report;
  });

  it('runs both requirement sets on every leg', () => {
    assert.deepEqual(report.sets, ['2025-11-25', '2026-07-28']);
    assert.deepEqual(
      report.legs.map((l) => l.id),
      ['direct', 'relay', 'bus-ref-http', 'bus-ref-stdio', 'bus-mcp'],
    );
    for (const set of report.sets) assert.ok(report.rows.filter((r) => r.set === set && r.scored).length >= 30, set);
  });

  it('directly, the reference server passes every scored scenario of both sets', () => {
    const failing = report.rows
      .filter((r) => r.scored && !r.results.direct?.ok)
      .map(
        (r) => `${r.set} ${r.scenario}: ${r.results.direct?.failedChecks?.join(', ')} ${r.results.direct?.firstError}`,
      );
    assert.deepEqual(failing, []);
  });

  it('directly, it fails exactly the scenarios listed as its directFailures', () => {
    const failing = new Set(report.rows.filter((r) => !r.results.direct?.ok).map((r) => r.scenario));
    assert.deepEqual([...failing].sort(), [...DIRECT_FAILURES].sort());
  });

  it('the auth relay the bus legs go through changes no verdict (control leg)', () => {
    const differ = report.rows
      .filter((r) => r.results.relay?.ok !== r.results.direct?.ok)
      .map((r) => `${r.set} ${r.scenario}: direct ${r.results.direct?.ok}, relay ${r.results.relay?.ok}`);
    assert.deepEqual(differ, []);
  });

  it('every scenario that passes directly passes through the bus, except the KNOWN_GAPS', () => {
    const unlisted: string[] = [];
    for (const leg of report.legs.filter((l) => l.id !== 'direct' && l.id !== 'relay'))
      for (const r of report.rows) {
        const bus = r.results[leg.id];
        if (!r.results.direct?.ok || bus?.ok) continue;
        if (KNOWN_GAPS.some((g) => matches(g, r.set, leg.id, r.scenario))) continue;
        const why = bus?.unavailable ? 'endpoint missing' : `${bus?.failedChecks?.join(', ')}: ${bus?.firstError}`;
        unlisted.push(`${r.set} ${leg.id} ${r.scenario} (${why})`);
      }
    assert.deepEqual(
      unlisted,
      [],
      'new gaps: fix the bus, or list them with a reason in scripts/conformance/known-gaps.json',
    );
  });

  it('no KNOWN_GAPS entry is stale: each still names at least one failure and none of its scenarios passes', () => {
    const stale: string[] = [];
    for (const g of KNOWN_GAPS) {
      const covered = report.rows.filter(
        (r) => r.results.direct?.ok && r.results[g.leg] !== undefined && matches(g, r.set, g.leg, r.scenario),
      );
      const passing = covered.filter((r) => r.results[g.leg]?.ok);
      if (covered.length === 0) stale.push(`${g.set} ${g.leg} ${g.scenario}: matches nothing that passes directly`);
      else if (passing.length > 0)
        stale.push(
          `${g.set} ${g.leg} ${g.scenario}: now passes for ${passing.map((r) => `${r.set} ${r.scenario}`).join(', ')}`,
        );
    }
    assert.deepEqual(stale, [], 'remove (or narrow) these entries in scripts/conformance/known-gaps.json');
  });
});
