// Opens the configured state store. The SQLite and Redis drivers are loaded only when configured, so a bus on the
// memory store never loads better-sqlite3 or ioredis.
import type { StoreConfig } from '../config/schema.js';
import type { StateStore } from './contract.js';
import { MemoryStore } from './memory.js';

export interface StoreOptions {
  /** This bus process's id; Redis uses it to name its lease waiters. */
  replicaId: string;
  /** Open for reading only (`toolbus audit` while a bus runs): SQLite takes no lock file and writes nothing. */
  readonly?: boolean;
}

export async function createStore(cfg: StoreConfig, opts: StoreOptions): Promise<StateStore> {
  switch (cfg.kind) {
    case 'memory':
      return new MemoryStore();
    case 'sqlite': {
      const { openSqliteStore } = await import('./sqlite.js');
      return openSqliteStore(cfg.path, { readonly: opts.readonly ?? false });
    }
    case 'redis': {
      const { openRedisStore } = await import('./redis.js');
      return openRedisStore({ url: cfg.url, prefix: cfg.prefix, replicaId: opts.replicaId });
    }
  }
}
