// The issuer key cache, against a real JWKS server on loopback and an injected clock: kept exactly as long as
// Cache-Control max-age says (capped), an unknown kid refetches at once but at most once per cooldown, and a
// failing provider is not hammered.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { decodeProtectedHeader, errors } from 'jose';
import { freshnessMs, JwksCache, KeysUnavailable } from '../../src/agents/jwks-cache.js';
import { JwksIssuer } from '../helpers/jwks-issuer.js';

describe('freshnessMs', () => {
  it('reads max-age, treats no-store/no-cache as 0, and says nothing otherwise', () => {
    assert.equal(freshnessMs('public, max-age=30'), 30_000);
    assert.equal(freshnessMs('private, max-age=5'), 5_000);
    assert.equal(freshnessMs('no-cache'), 0);
    assert.equal(freshnessMs('no-store, max-age=60'), 0);
    assert.equal(freshnessMs('public'), undefined);
    assert.equal(freshnessMs(null), undefined);
  });
});

describe('JwksCache', () => {
  let idp: JwksIssuer;
  before(async () => {
    idp = await JwksIssuer.start('/realms/unit');
  });
  after(() => idp.close());

  function cache(opts: { cooldownMs?: number; maxAgeMs?: number; uri?: string } = {}) {
    const clock = { t: 1_000_000 };
    const c = new JwksCache({
      uri: async () => new URL(opts.uri ?? `${idp.issuer}/protocol/openid-connect/certs`),
      cooldownMs: opts.cooldownMs ?? 50,
      maxAgeMs: opts.maxAgeMs ?? 600_000,
      now: () => clock.t,
    });
    return { c, clock };
  }
  const header = async (kid?: string) => decodeProtectedHeader(await idp.sign({}, kid ? { kid } : {}));

  it('keeps the set exactly as long as max-age, and no longer than its own cap', async () => {
    idp.cacheControl = 'max-age=30';
    const { c, clock } = cache();
    const start = idp.jwksFetches;
    await c.key(await header());
    clock.t += 29_999;
    await c.key(await header());
    assert.equal(idp.jwksFetches - start, 1);
    clock.t += 1;
    await c.key(await header());
    assert.equal(idp.jwksFetches - start, 2);

    idp.cacheControl = 'max-age=86400';
    const capped = cache({ maxAgeMs: 10_000 });
    const s2 = idp.jwksFetches;
    await capped.c.key(await header());
    capped.clock.t += 10_000;
    await capped.c.key(await header());
    assert.equal(idp.jwksFetches - s2, 2, 'a day of max-age is capped at maxAgeMs');
  });

  it('refetches for an unknown kid, once per cooldown however many arrive', async () => {
    idp.cacheControl = 'max-age=3600';
    const { c, clock } = cache({ cooldownMs: 100 });
    await c.key(await header());
    clock.t += 200;
    const kid = await idp.addKey();
    const start = idp.jwksFetches;
    await c.key(await header(kid)); // past the cooldown: fetched at once
    assert.equal(idp.jwksFetches - start, 1);
    // Inside the cooldown (the fake clock does not move), 20 forged kids share the one refetch due at its end.
    const forged = await Promise.allSettled(
      Array.from({ length: 20 }, async (_, i) => c.key({ ...(await header()), kid: `forged-${i}` })),
    );
    assert.ok(forged.every((r) => r.status === 'rejected' && r.reason instanceof errors.JWKSNoMatchingKey));
    assert.equal(idp.jwksFetches - start, 2);
  });

  it('fails fast for a cooldown after the provider could not be reached', async () => {
    const { c, clock } = cache({ cooldownMs: 5_000, uri: 'http://127.0.0.1:1/certs' });
    await assert.rejects(c.key(await header()), KeysUnavailable);
    const t0 = Date.now();
    await assert.rejects(c.key(await header()), /moments ago/);
    assert.ok(Date.now() - t0 < 100);
    clock.t += 5_000;
    await assert.rejects(c.key(await header()), /cannot fetch/);
  });
});
