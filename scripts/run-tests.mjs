#!/usr/bin/env node
// Runs every test file under test/ (or the ones named on the command line) with node's own test runner.
// Node 20 has no glob support in --test, so the files are listed here.
//
// On a full run it also checks the error table against reality: every test that asserts a toolbus error records the
// category it saw on a real call (test/helpers/mcp-http.ts), and a category of the table that no real call produced
// fails the run. Nothing here reads test source text.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

const args = process.argv.slice(2);
const full = args.length === 0;
const files = full ? walk('test').sort() : args;
const concurrency = process.env.TEST_CONCURRENCY ?? '2';
const observed = join(mkdtempSync(join(tmpdir(), 'toolbus-errors-')), 'observed.txt');
const r = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...files],
  { stdio: 'inherit', env: { ...process.env, TOOLBUS_OBSERVED_ERRORS: observed } },
);
let status = r.status ?? 1;

if (full) {
  const { ERROR_TABLE } = await import('../dist/src/errors.js');
  let lines = [];
  try {
    lines = readFileSync(observed, 'utf8').split('\n').filter(Boolean);
  } catch {
    // no error asserted at all: every category is missing
  }
  const codes = new Map();
  for (const line of lines) {
    const [category, code] = line.split(' ');
    if (!codes.has(category)) codes.set(category, new Set());
    codes.get(category).add(code);
  }
  console.log('\nerror categories produced by real calls in this run:');
  for (const category of Object.keys(ERROR_TABLE))
    console.log(
      `  ${codes.has(category) ? 'ok     ' : 'MISSING'} ${category}: ${[...(codes.get(category) ?? [])].sort().join(', ')}`,
    );
  const missing = Object.keys(ERROR_TABLE).filter((c) => !codes.has(c));
  if (missing.length > 0) {
    console.log(`error table: no real call produced ${missing.join(', ')}`);
    status = status || 1;
  }
}
process.exit(status);
