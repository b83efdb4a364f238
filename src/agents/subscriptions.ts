// Resource subscriptions, fanned out: one upstream subscription per (upstream, URI), counted across everything that
// subscribed (2025 sessions by `resources/subscribe`, 2026-07-28 `subscriptions/listen` streams by their
// `resourceSubscriptions`); `notifications/resources/updated` from the upstream goes only to the subscribers of that
// URI that may still read the upstream's resources. A subscriber that ends drops its subscriptions, and the last one
// out unsubscribes upstream.

export interface SubscriptionUpstream {
  request(method: string, params: Record<string, unknown>): Promise<unknown>;
}

export class SubscriptionTable<S extends object> {
  /** `upstream\0uri` → its subscribers. */
  private readonly subscribers = new Map<string, Set<S>>();

  constructor(private readonly upstream: (name: string) => SubscriptionUpstream | undefined) {}

  private static key(upstream: string, uri: string): string {
    return `${upstream}\u0000${uri}`;
  }

  async subscribe(session: S, upstream: string, uri: string): Promise<void> {
    const key = SubscriptionTable.key(upstream, uri);
    let set = this.subscribers.get(key);
    if (!set) {
      const up = this.upstream(upstream);
      if (!up) throw new Error(`upstream ${upstream} is not running`);
      await up.request('resources/subscribe', { uri });
      set = this.subscribers.get(key) ?? new Set();
      this.subscribers.set(key, set);
    }
    set.add(session);
  }

  async unsubscribe(session: S, upstream: string, uri: string): Promise<void> {
    const key = SubscriptionTable.key(upstream, uri);
    const set = this.subscribers.get(key);
    if (!set?.delete(session) || set.size > 0) return;
    this.subscribers.delete(key);
    await this.upstream(upstream)
      ?.request('resources/unsubscribe', { uri })
      .catch(() => {});
  }

  /** Who subscribed to this URI of this upstream. */
  sessionsFor(upstream: string, uri: string): ReadonlySet<S> {
    return this.subscribers.get(SubscriptionTable.key(upstream, uri)) ?? new Set();
  }

  /** A subscriber ended: its subscriptions go, and URIs nobody watches any more are unsubscribed upstream. */
  dropSession(session: S): void {
    for (const [key, set] of this.subscribers) {
      if (!set.has(session)) continue;
      const [upstream, uri] = key.split('\u0000') as [string, string];
      void this.unsubscribe(session, upstream, uri);
    }
  }
}
