// Allow-list globs: what they match, and that a glob built to make a backtracking engine spin (an identity provider's
// `tools` claim is one source of globs) is answered at once on any name.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { toolMatcher } from '../../src/catalog/catalog.js';
import { ROOT } from '../helpers/bus-process.js';

describe('toolMatcher', () => {
  it('matches * as any run, ? as one character, and everything else literally', () => {
    const allows = toolMatcher(['tickets__*', 'db__get_?', 'a.b+c(d)[e]$']);
    assert.equal(allows('tickets__create'), true);
    assert.equal(allows('tickets__'), true);
    assert.equal(allows('xtickets__create'), false);
    assert.equal(allows('db__get_x'), true);
    assert.equal(allows('db__get_xy'), false);
    assert.equal(allows('a.b+c(d)[e]$'), true);
    assert.equal(allows('aXb+c(d)[e]$'), false, 'a dot is a dot');
    assert.equal(toolMatcher([])('anything'), false);
    assert.equal(toolMatcher(['*'])('anything'), true);
  });

  it('answers a many-star glob on a long name without backtracking', () => {
    // On a backtracking engine this would run for hours, holding the event loop: so it runs in a child process that
    // is killed after 20 s, and the test reads the child's answer.
    const code = `
      import { toolMatcher } from ${JSON.stringify(join(ROOT, 'src/catalog/catalog.ts'))};
      const allows = toolMatcher(['*a*a*a*a*a*a*a*a*a*a*a*a*c']);
      console.log(JSON.stringify([allows('a'.repeat(2000)), allows('a'.repeat(2000) + 'c')]));`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    assert.equal(r.signal, null, 'the matcher did not answer within 20 s');
    assert.deepEqual(JSON.parse(r.stdout), [false, true]);
  });
});
