// The vault of the Redis store: a hash per blob (value, version) under the store's prefix, a shared version counter,
// and locks as plain `SET NX PX` keys. Every key carries a TTL (the blobs a long one, renewed on each write), so the
// store never leaves a key behind forever.
//
// Scripts (KEYS/ARGV):
//   PUT     KEYS[1] blob hash, KEYS[2] version counter; ARGV value, expectedVersion, ttlMs → new version | 0
//   UNLOCK  KEYS[1] lock key; ARGV holder → 1 if deleted
import type { Redis } from 'ioredis';
import { StoreUnavailable, type VaultBlob, type VaultStore } from './contract.js';

const PUT = `
local cur = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if cur ~= tonumber(ARGV[2]) then return 0 end
local v = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'version', v)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return v
`;

const UNLOCK = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/** A refresh token outlives its access tokens by far; a blob untouched this long is dropped. */
const BLOB_TTL_MS = 400 * 24 * 3600_000;

async function guarded<T>(op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    if ((err as Error)?.name === 'ReplyError') throw err;
    throw new StoreUnavailable(`Redis unreachable: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }
}

export class RedisVault implements VaultStore {
  constructor(
    private readonly client: Redis,
    private readonly prefix: string,
  ) {}

  private blobKey(name: string): string {
    return `${this.prefix}vault:${name}`;
  }

  private lockKey(name: string): string {
    return `${this.prefix}vault-lock:${name}`;
  }

  getBlob(name: string): Promise<VaultBlob | null> {
    return guarded(async () => {
      const [value, version] = await this.client.hmget(this.blobKey(name), 'value', 'version');
      return typeof value !== 'string' || typeof version !== 'string' ? null : { value, version: Number(version) };
    });
  }

  putBlob(name: string, value: string, expectedVersion: number): Promise<number | null> {
    return guarded(async () => {
      const v = Number(
        await this.client.eval(
          PUT,
          2,
          this.blobKey(name),
          `${this.prefix}vault-seq`,
          value,
          String(expectedVersion),
          String(BLOB_TTL_MS),
        ),
      );
      return v > 0 ? v : null;
    });
  }

  deleteBlob(name: string): Promise<void> {
    return guarded(async () => {
      await this.client.del(this.blobKey(name));
    });
  }

  tryLock(name: string, holder: string, ttlMs: number): Promise<boolean> {
    return guarded(async () => {
      const key = this.lockKey(name);
      const ok = await this.client.set(key, holder, 'PX', Math.max(1, Math.ceil(ttlMs)), 'NX');
      if (ok === 'OK') return true;
      return (await this.client.get(key)) === holder;
    });
  }

  unlock(name: string, holder: string): Promise<void> {
    return guarded(async () => {
      await this.client.eval(UNLOCK, 1, this.lockKey(name), holder);
    });
  }
}
