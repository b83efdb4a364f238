// The Redis store's connection to Redis: one command client with the Lua scripts defined on it (EVALSHA, loaded on
// NOSCRIPT), one subscriber connection for the pub/sub that wakes waiters (made on first need), the names of every
// key under the store's prefix, and the mapping of Redis failures to StoreUnavailable. The store's rules live in
// redis.ts (keys, writes, rate) and redis-leases.ts (leases); this file only carries their scripts to Redis.
import { Redis } from 'ioredis';
import { StoreUnavailable } from './contract.js';
import { ALL_SCRIPTS, type LuaScript } from './redis-scripts.js';
import { ScopeSignals } from './scope-signals.js';

/** Longest time a command may take before the store counts as unreachable. */
export const COMMAND_TIMEOUT_MS = 1000;

/** Reply errors that mean Redis cannot serve now (loading, failing over, out of memory), not a bug in a script. */
const UNAVAILABLE_REPLY = /^(LOADING|BUSY|MASTERDOWN|READONLY|CLUSTERDOWN|TRYAGAIN|NOREPLICAS|OOM|NOAUTH|WRONGPASS)/;

function toStoreError(err: unknown): unknown {
  if (err instanceof StoreUnavailable) return err;
  const e = err as Error;
  if (e?.name === 'ReplyError' && !UNAVAILABLE_REPLY.test(e.message)) return err;
  return new StoreUnavailable(`Redis unreachable: ${e?.message ?? String(err)}`, { cause: err });
}

export function closedError(): StoreUnavailable {
  return new StoreUnavailable('the state store is closed');
}

/** Redis takes whole milliseconds (PEXPIRE refuses fractions). */
export const ms = (n: number) => Math.max(0, Math.ceil(n));

/** Every key of the store, under its prefix. */
export class RedisKeys {
  constructor(readonly prefix: string) {}
  key(scope: string): string {
    return `${this.prefix}key:${scope}`;
  }
  lease(scope: string): string {
    return `${this.prefix}lease:${scope}`;
  }
  leaseQueue(scope: string): string {
    return `${this.prefix}lease-q:${scope}`;
  }
  leaseHeartbeats(scope: string): string {
    return `${this.prefix}lease-hb:${scope}`;
  }
  leaseIndex(): string {
    return `${this.prefix}lease-index`;
  }
  tokenCounter(): string {
    return `${this.prefix}lease-seq`;
  }
  bucket(name: string): string {
    return `${this.prefix}rate:${name}`;
  }
  audit(): string {
    return `${this.prefix}audit`;
  }
}

export class RedisLink {
  readonly client: Redis;
  readonly keys: RedisKeys;
  /** Settled keys: the scope of a record that reached a final state (published by the scripts as `keyChannel`). */
  readonly keySignals = new ScopeSignals();
  /** Lease handovers: the waiter id that reached the head of its queue (published as `leaseChannel`). */
  readonly leaseSignals = new ScopeSignals();
  readonly keyChannel: string;
  readonly leaseChannel: string;
  /** One per command or MULTI pipeline sent (a NOSCRIPT fallback adds a second); exposed as a metric. */
  roundTrips = 0;
  closed = false;
  private subscriber: Redis | undefined;
  private subscribed: Promise<void> | undefined;

  constructor(url: string, prefix: string) {
    this.keys = new RedisKeys(prefix);
    this.keyChannel = `${prefix}key-events`;
    this.leaseChannel = `${prefix}lease-events`;
    this.client = new Redis(url, {
      lazyConnect: true,
      // Fail fast instead of queueing while disconnected: a write must be refused, not left hanging.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 1,
      commandTimeout: COMMAND_TIMEOUT_MS,
      connectTimeout: COMMAND_TIMEOUT_MS,
      retryStrategy: (times) => Math.min(50 * 2 ** times, 1000),
    });
    // Failures surface through the commands that hit them; the event itself only needs a listener.
    this.client.on('error', () => {});
    // ioredis runs each by EVALSHA and loads it on NOSCRIPT (first use, or after Redis restarted).
    for (const script of ALL_SCRIPTS) {
      this.client.defineCommand(script.name, {
        lua: script.lua,
        ...(script.keys === undefined ? {} : { numberOfKeys: script.keys }),
      });
    }
  }

  /** Connects, waiting at most about a second: a bus may start while Redis is down and serve reads meanwhile. */
  async connect(): Promise<void> {
    await this.client.connect().catch(() => {});
  }

  assertOpen(): void {
    if (this.closed) throw closedError();
  }

  /** Runs a script defined on the client (EVALSHA; ioredis loads it on NOSCRIPT). */
  eval(script: LuaScript, keys: string[], args: (string | number)[], evenIfClosed = false): Promise<unknown> {
    return this.command(() => {
      const run = (this.client as unknown as Record<string, (...a: (string | number)[]) => Promise<unknown>>)[
        script.name
      ]!;
      return script.keys === undefined
        ? run.call(this.client, keys.length, ...keys, ...args)
        : run.call(this.client, ...keys, ...args);
    }, evenIfClosed);
  }

  /** One round trip, counted; a failure that means Redis cannot serve becomes StoreUnavailable. */
  async command<T>(fn: () => Promise<T>, evenIfClosed = false): Promise<T> {
    if (!evenIfClosed) this.assertOpen();
    this.roundTrips++;
    try {
      return await fn();
    } catch (err) {
      throw toStoreError(err);
    }
  }

  /** Subscribes the dedicated connection once; a failure is retried by the next waiter (the poll covers meanwhile). */
  subscribe(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (!this.subscribed) {
      const sub = this.subscriber ?? this.client.duplicate();
      if (!this.subscriber) {
        this.subscriber = sub;
        sub.on('error', () => {});
        sub.on('message', (channel: string, scope: string) => {
          if (channel === this.keyChannel) this.keySignals.notify(scope);
          else if (channel === this.leaseChannel) this.leaseSignals.notify(scope); // a waiter id (see LEASE_RELEASE)
        });
      }
      this.subscribed = (async () => {
        if (sub.status === 'wait') await sub.connect();
        await sub.subscribe(this.keyChannel, this.leaseChannel);
      })().catch(() => {
        this.subscribed = undefined;
      });
    }
    return this.subscribed;
  }

  /** Wakes every waiter (they find the store closed and leave), then quits both connections. */
  async close(): Promise<void> {
    this.closed = true;
    this.keySignals.notifyAll();
    this.leaseSignals.notifyAll();
    // Let woken lease waiters send their leave before QUIT, which Redis then processes after it.
    await new Promise((r) => setImmediate(r));
    const quit = async (c: Redis) => {
      if (c.status === 'ready') {
        await Promise.race([c.quit().catch(() => {}), new Promise((r) => setTimeout(r, COMMAND_TIMEOUT_MS).unref())]);
      }
      c.disconnect();
    };
    await Promise.all([quit(this.client), this.subscriber ? quit(this.subscriber) : Promise.resolve()]);
  }
}
