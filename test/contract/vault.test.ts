// The vault part of the state-store contract (blobs with compare-and-set, named locks with a TTL), run against all
// three stores, plus the sealing that keeps tokens out of the store in clear. Redis: the real one on 127.0.0.1:6379
// under a unique prefix (deleted at the end).
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import type { StateStore } from '../../src/store/contract.js';
import { MemoryStore } from '../../src/store/memory.js';
import { openRedisStore } from '../../src/store/redis.js';
import { openSqliteStore } from '../../src/store/sqlite.js';
import { openSqliteVault } from '../../src/store/vault-sqlite.js';
import { seal, unseal } from '../../src/upstreams/oauth/sealing.js';
import { tempDir } from '../helpers/bus-process.js';

const REDIS_URL = 'redis://127.0.0.1:6379/0';
const prefix = `tb-vault-test:${randomUUID().slice(0, 8)}:`;

function vaultContract(name: string, open: () => Promise<StateStore>): void {
  describe(`${name} store: the vault`, () => {
    it('writes with compare-and-set: absent = version 0, a stale version loses, versions grow', async () => {
      const store = await open();
      try {
        const v = store.vault;
        const blob = `b/${randomUUID()}`;
        assert.equal(await v.getBlob(blob), null);
        const v1 = await v.putBlob(blob, 'one', 0);
        assert.ok(v1 !== null && v1 > 0);
        assert.equal(await v.putBlob(blob, 'again', 0), null, 'only if absent');
        const v2 = await v.putBlob(blob, 'two', v1);
        assert.ok(v2 !== null && v2 > v1);
        assert.equal(await v.putBlob(blob, 'stale', v1), null, 'a stale version loses');
        assert.deepEqual(await v.getBlob(blob), { value: 'two', version: v2 });
        await v.deleteBlob(blob);
        assert.equal(await v.getBlob(blob), null);
        const v3 = await v.putBlob(blob, 'three', 0);
        assert.ok(v3 !== null && v3 > v2, 'a version is never reused after a delete');
      } finally {
        await store.close();
      }
    });

    it('locks: one holder at a time, re-entrant for the holder, free after unlock or TTL', async () => {
      const store = await open();
      try {
        const v = store.vault;
        const lock = `l/${randomUUID()}`;
        assert.equal(await v.tryLock(lock, 'a', 300), true);
        assert.equal(await v.tryLock(lock, 'b', 300), false);
        assert.equal(await v.tryLock(lock, 'a', 300), true);
        await v.unlock(lock, 'b');
        assert.equal(await v.tryLock(lock, 'b', 300), false, 'only the holder unlocks');
        await v.unlock(lock, 'a');
        assert.equal(await v.tryLock(lock, 'b', 200), true);
        await sleep(260);
        assert.equal(await v.tryLock(lock, 'c', 200), true, 'an expired lock is free');
      } finally {
        await store.close();
      }
    });
  });
}

vaultContract('memory', async () => new MemoryStore());
const dir = tempDir('toolbus-vault-');
vaultContract('sqlite', async () => openSqliteStore(join(dir, `s-${randomUUID()}.db`), { readonly: false }));
vaultContract('redis', () => openRedisStore({ url: REDIS_URL, prefix, replicaId: 'vault-test' }));

describe('sqlite vault beside a running store', () => {
  it('a second process-style handle (toolbus login) writes while the store holds its file lock', async () => {
    const path = join(dir, 'shared.db');
    const store = openSqliteStore(path, { readonly: false });
    const side = openSqliteVault(path);
    try {
      const v = await side.vault.putBlob('oauth/x', 'sealed', 0);
      assert.deepEqual(await store.vault.getBlob('oauth/x'), { value: 'sealed', version: v });
    } finally {
      side.close();
      await store.close();
    }
  });
});

describe('sealing', () => {
  it('opens only with the same key and label, and detects tampering', () => {
    const key = randomBytes(32);
    const sealed = seal(key, 'toolbus-oauth:a', 'secret-refresh-token');
    assert.ok(!sealed.includes('secret-refresh-token'));
    assert.equal(unseal(key, 'toolbus-oauth:a', sealed), 'secret-refresh-token');
    assert.throws(() => unseal(key, 'toolbus-oauth:b', sealed));
    assert.throws(() => unseal(randomBytes(32), 'toolbus-oauth:a', sealed));
    const raw = Buffer.from(sealed.slice(3), 'base64');
    raw[raw.length - 1]! ^= 1;
    assert.throws(() => unseal(key, 'toolbus-oauth:a', `v1.${raw.toString('base64')}`));
  });
});

after(async () => {
  const redis = new Redis(REDIS_URL);
  const keys = await redis.keys(`${prefix}*`);
  if (keys.length > 0) await redis.del(...keys);
  redis.disconnect();
});
