// What a live reload does to each upstream, decided from the two configs alone (src/config/reload-plan.ts): the
// running bus's side of it is covered end to end in test/integration/reload.test.ts and rotation.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../../src/config/load.js';
import { planReload } from '../../src/config/reload-plan.js';

const config = (upstreams: string, extra = '') =>
  parseConfig(`
agents: [{ id: a, token: "plan-token-a" }]
${extra}
upstreams:
${upstreams}
`).config;

const stdio = (name: string, over = '', script = 'server.js') => `  ${name}:
    command: node
    args: [${script}]
${over}    tools: { echo: { kind: read } }
`;

describe('reload plan', () => {
  it('starts new upstreams, stops removed ones, and leaves unchanged ones alone', () => {
    const plan = planReload(config(stdio('kept') + stdio('gone')), config(stdio('kept') + stdio('fresh')));
    assert.deepEqual(plan.removed, ['gone']);
    assert.deepEqual(plan.upstreams, [{ name: 'fresh', action: 'add' }]);
    assert.deepEqual(plan.notes, []);
  });

  it('a new way to reach an upstream needs a new connection; a policy change is applied in place', () => {
    const before = config(stdio('moved') + stdio('capped'));
    const after = config(
      stdio('moved', '', 'other.js') + stdio('capped', '    rateLimit: { perSecond: 5, burst: 5 }\n'),
    );
    assert.deepEqual(planReload(before, after).upstreams, [
      { name: 'moved', action: 'reconnect' },
      { name: 'capped', action: 'retune' },
    ]);
  });

  it('says what needs a restart, and which agents and limits changed', () => {
    const before = config(stdio('u'));
    const after = parseConfig(`
server: { port: 7999 }
limits: { maxBatch: 3 }
agents: [{ id: b, token: "plan-token-b" }]
upstreams:
${stdio('u')}`).config;
    assert.deepEqual(planReload(before, after).notes, [
      'server changed: takes effect after a restart',
      'agents +[b] -[a]',
      'limits changed',
    ]);
  });
});
