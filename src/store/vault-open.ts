// The vault alone, for commands that run beside a bus (`toolbus login`, `logout`): SQLite without the store's
// exclusive file lock, Redis as one more client. The memory store lives inside one process and cannot hold a login.
import type { StoreConfig } from '../config/schema.js';
import type { VaultStore } from './contract.js';

export async function openVault(cfg: StoreConfig): Promise<{ vault: VaultStore; close: () => Promise<void> }> {
  switch (cfg.kind) {
    case 'memory':
      throw new Error('store.kind memory keeps nothing between processes: use sqlite or redis to log in upstreams');
    case 'sqlite': {
      const { openSqliteVault } = await import('./vault-sqlite.js');
      const { vault, close } = openSqliteVault(cfg.path);
      return { vault, close: async () => close() };
    }
    case 'redis': {
      const { openRedisStore } = await import('./redis.js');
      const store = await openRedisStore({ url: cfg.url, prefix: cfg.prefix, replicaId: 'login-cli' });
      await store.ping();
      return { vault: store.vault, close: () => store.close() };
    }
  }
}
