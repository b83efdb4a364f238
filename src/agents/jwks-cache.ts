// The issuer's signing keys, fetched and cached by toolbus itself rather than by jose's createRemoteJWKSet, because
// the contract here is stricter: the set is kept no longer than the provider's `Cache-Control: max-age` (so a key the
// provider drops stops working within seconds), and a token with an unknown `kid` refetches the set at once, but at
// most once per cooldown (so a stream of forged kids cannot turn toolbus into a load generator against the IdP).
import { type CryptoKey, createLocalJWKSet, errors, type JSONWebKeySet, type JWSHeaderParameters } from 'jose';

export interface JwksCacheOptions {
  /** Where the key set lives; resolved lazily (discovery) the first time it is needed. */
  uri: () => Promise<URL>;
  cooldownMs: number;
  /** Used when the response has no max-age, and as a cap on max-age. */
  maxAgeMs: number;
  now?: () => number;
  fetchTimeoutMs?: number;
  /** Told once per failed fetch (so at most once per cooldown): operators must hear that the IdP is unreachable. */
  onFetchFailed?: (message: string) => void;
}

/** The IdP could not be asked for its keys, or answered with something that is not a key set. */
export class KeysUnavailable extends Error {}

/** `Cache-Control` → how long the response may be reused, in ms; undefined when it says nothing about it. */
export function freshnessMs(cacheControl: string | null): number | undefined {
  if (!cacheControl) return undefined;
  const directives = cacheControl
    .toLowerCase()
    .split(',')
    .map((d) => d.trim());
  if (directives.includes('no-store') || directives.includes('no-cache')) return 0;
  for (const d of directives) {
    const m = /^max-age\s*=\s*"?(\d+)"?$/.exec(d);
    if (m) return Number(m[1]) * 1000;
  }
  return undefined;
}

export class JwksCache {
  private local: ReturnType<typeof createLocalJWKSet> | undefined;
  private expiresAt = 0;
  private lastFetchAt = Number.NEGATIVE_INFINITY;
  private inflight: Promise<void> | undefined;
  private scheduled: Promise<void> | undefined;
  private failedAt = Number.NEGATIVE_INFINITY;
  private readonly now: () => number;

  constructor(private readonly opts: JwksCacheOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** Until when the current key set stands (a token verified with it may be trusted that long). */
  get freshUntil(): number {
    return this.local ? this.expiresAt : 0;
  }

  /** A key resolver for jose's jwtVerify. */
  readonly key = async (header: JWSHeaderParameters): Promise<CryptoKey> => {
    if (!this.local || this.now() >= this.expiresAt) await this.refresh();
    try {
      return await this.local!(header);
    } catch (err) {
      // An unknown kid may be a key the provider has just rotated in: look again, unless we looked moments ago.
      if (!(err instanceof errors.JWKSNoMatchingKey)) throw err;
      await this.refreshForUnknownKid();
      return await this.local!(header);
    }
  };

  /**
   * Refetches for an unknown kid, but never sooner than `cooldownMs` after the previous fetch: a request that comes
   * inside the cooldown waits for the one refetch due at its end (shared by every such request), so a key the
   * provider has just published works within the cooldown, and a flood of forged kids costs one fetch per window.
   */
  private refreshForUnknownKid(): Promise<void> {
    const wait = this.lastFetchAt + this.opts.cooldownMs - this.now();
    if (wait <= 0) return this.refresh();
    this.scheduled ??= new Promise<void>((resolve) => setTimeout(resolve, wait).unref()).then(() => {
      this.scheduled = undefined;
      return this.refresh();
    });
    return this.scheduled;
  }

  /** One fetch at a time; concurrent verifications wait for the same one. */
  private refresh(): Promise<void> {
    this.inflight ??= this.fetchSet().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private async fetchSet(): Promise<void> {
    // While the provider is failing, requests fail fast instead of each trying it again.
    if (this.now() - this.failedAt < this.opts.cooldownMs)
      throw new KeysUnavailable("the issuer's key set was unreachable moments ago");
    this.lastFetchAt = this.now();
    try {
      await this.fetchOnce();
    } catch (err) {
      this.failedAt = this.now();
      this.opts.onFetchFailed?.((err as Error).message);
      throw err;
    }
  }

  private async fetchOnce(): Promise<void> {
    let body: unknown;
    let maxAge: number | undefined;
    try {
      const res = await fetch(await this.opts.uri(), {
        headers: { accept: 'application/json' },
        redirect: 'error',
        signal: AbortSignal.timeout(this.opts.fetchTimeoutMs ?? 5_000),
      });
      if (!res.ok) throw new Error(`status ${res.status}`);
      maxAge = freshnessMs(res.headers.get('cache-control'));
      body = await res.json();
    } catch (err) {
      // A stale set is not kept past its lifetime: without keys, JWTs are refused until the provider answers.
      if (this.now() >= this.expiresAt) this.local = undefined;
      throw new KeysUnavailable(`cannot fetch the issuer's key set (${(err as Error).message})`);
    }
    const keys = (body as { keys?: unknown } | null)?.keys;
    if (!Array.isArray(keys)) throw new KeysUnavailable('the key set has no "keys" array');
    this.local = createLocalJWKSet(body as JSONWebKeySet);
    this.expiresAt = this.lastFetchAt + Math.min(maxAge ?? this.opts.maxAgeMs, this.opts.maxAgeMs);
  }
}
