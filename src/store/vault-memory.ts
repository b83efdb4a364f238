// The vault of the in-process store (memory): blobs and locks in maps, judged by this process's clock.
import type { VaultBlob, VaultStore } from './contract.js';

export class MemoryVault implements VaultStore {
  private readonly blobs = new Map<string, VaultBlob>();
  private readonly locks = new Map<string, { holder: string; expiresAt: number }>();
  private seq = 0;

  constructor(private readonly now: () => number = Date.now) {}

  async getBlob(name: string): Promise<VaultBlob | null> {
    return this.blobs.get(name) ?? null;
  }

  async putBlob(name: string, value: string, expectedVersion: number): Promise<number | null> {
    if ((this.blobs.get(name)?.version ?? 0) !== expectedVersion) return null;
    const version = ++this.seq;
    this.blobs.set(name, { value, version });
    return version;
  }

  async deleteBlob(name: string): Promise<void> {
    this.blobs.delete(name);
  }

  async tryLock(name: string, holder: string, ttlMs: number): Promise<boolean> {
    const now = this.now();
    const cur = this.locks.get(name);
    if (cur && cur.expiresAt > now && cur.holder !== holder) return false;
    this.locks.set(name, { holder, expiresAt: now + ttlMs });
    return true;
  }

  async unlock(name: string, holder: string): Promise<void> {
    if (this.locks.get(name)?.holder === holder) this.locks.delete(name);
  }
}
