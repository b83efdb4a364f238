// The Lua scripts of the Redis store, one file per script under src/store/lua/ (each starts with an Input/Output
// header), read once at start. `-- @include name` splices lua/includes/name.lua in, so the record codec, the clock,
// the fencing-token rule and the lease release are written once. Each script runs atomically in Redis and judges
// time by Redis' own clock (TIME), so replicas with skewed clocks agree on what has expired. They mirror key-rules.ts,
// local-leases.ts and gcra.ts, which the in-process stores use; the contract suite runs against both.
//
// The .lua files are not compiled, so dist/ has none: from dist/src/store/ the loader reads them in the package's
// src/store/lua/ (shipped with the package), from src/store/ (tests via tsx) next to this file.
//
// Keys (all under the configured prefix P):
//   P key:<scope>        string  state fp owner fence expiresAt unknownTtl joiners, then the result (key-record.lua);
//                                TTL: when no reader could see it any more
//   P lease:<scope>      hash    h t ex q     a lease (holder '' = free or blocked by a lock-delay; q '1' = waiters)
//   P lease-q:<scope>    zset    waiter id -> arrival (Redis time, µs): FIFO order
//   P lease-hb:<scope>   zset    waiter id -> heartbeat deadline (ms): a dead replica's waiters drop out
//   P lease-index        zset    scope -> lease expiry, for listing held leases; lives a day past its last grant
//                                (members leave on release; expired ones are trimmed on acquire and on listing)
//   P lease-seq          string  the last fencing token issued
//   P rate:<bucket>      hash    tat pu       GCRA theoretical arrival time and pause-until (ms)
//   P audit              stream               capped audit trail
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface LuaScript {
  readonly name: string;
  /** How many KEYS it takes; undefined when the caller passes the count first (scripts over several scopes). */
  readonly keys: number | undefined;
  readonly lua: string;
}

function luaDir(): string {
  for (const rel of ['./lua/', '../../../src/store/lua/']) {
    const dir = fileURLToPath(new URL(rel, import.meta.url));
    if (existsSync(dir)) return dir;
  }
  throw new Error('the Redis store cannot find its Lua scripts (src/store/lua/)');
}

const INCLUDE = /^-- @include ([a-z-]+)\s*$/gm;

/** Splices every `-- @include name` line of `source` with lua/includes/name.lua. */
export function withIncludes(source: string): string {
  const dir = luaDir();
  return source.replace(INCLUDE, (_m, inc: string) => readFileSync(`${dir}includes/${inc}.lua`, 'utf8'));
}

function load(name: string, keys: number | undefined): LuaScript {
  return { name, keys, lua: withIncludes(readFileSync(`${luaDir()}${name}.lua`, 'utf8')) };
}

export const KEY_CLAIM = load('key-claim', 1);
export const KEY_GET = load('key-get', 1);
export const KEY_MOVE = load('key-move', 1);
export const BEGIN_WRITE = load('begin-write', undefined);
export const FINISH_WRITE = load('finish-write', undefined);
export const LEASE_ACQUIRE = load('lease-acquire', 5);
export const LEASE_LEAVE = load('lease-leave', 2);
export const LEASE_RENEW = load('lease-renew', 2);
export const LEASE_RELEASE = load('lease-release', 3);
export const RATE_TAKE = load('rate-take', 1);
export const RATE_PAUSE = load('rate-pause', 1);

export const ALL_SCRIPTS: readonly LuaScript[] = [
  KEY_CLAIM,
  KEY_GET,
  KEY_MOVE,
  BEGIN_WRITE,
  FINISH_WRITE,
  LEASE_ACQUIRE,
  LEASE_LEAVE,
  LEASE_RENEW,
  LEASE_RELEASE,
  RATE_TAKE,
  RATE_PAUSE,
];
