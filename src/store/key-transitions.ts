// The five key transitions of the contract, written once for the in-process stores: each is one compare-and-set
// that the store implements as `transition` (memory: a map update; SQLite: one transaction).
import type { KeyTransition } from './key-rules.js';

export abstract class KeyTransitions {
  protected abstract transition(
    scope: string,
    owner: string,
    fence: number,
    t: KeyTransition,
  ): boolean | Promise<boolean>;

  async markDispatched(scope: string, owner: string, fence: number, ttlMs: number): Promise<boolean> {
    return this.transition(scope, owner, fence, { op: 'dispatch', ttlMs });
  }

  async renewKey(scope: string, owner: string, fence: number, ttlMs: number): Promise<boolean> {
    return this.transition(scope, owner, fence, { op: 'renew', ttlMs });
  }

  async completeKey(scope: string, owner: string, fence: number, result: string, ttlMs: number): Promise<boolean> {
    return this.transition(scope, owner, fence, { op: 'complete', result, ttlMs });
  }

  async markUnknown(scope: string, owner: string, fence: number, ttlMs: number): Promise<boolean> {
    return this.transition(scope, owner, fence, { op: 'unknown', ttlMs });
  }

  async releaseKey(scope: string, owner: string, fence: number): Promise<boolean> {
    return this.transition(scope, owner, fence, { op: 'release' });
  }
}
