// The OAuth side of one HTTP upstream connection: puts `Authorization: Bearer` on every request, refreshes the access
// token shortly before it expires, and on a 401 refreshes once and resends. The refresh policy is what makes parallel
// replicas safe with refresh-token rotation:
//
//   - one refresh per expiry for the whole cluster: a replica takes the store lock, then RE-READS the stored grant;
//     if another replica already rotated it, it adopts that grant instead of redeeming the old refresh token (which a
//     rotating server would treat as reuse and answer by revoking the whole token family);
//   - one refresh at a time per process (single flight), whatever the number of concurrent calls;
//   - `invalid_grant` means refresh is impossible: the upstream is `needs_login` until an operator logs in again,
//     which this class notices by re-reading the store.
//
// Tokens live in memory here and sealed in the store (token-vault.ts); they never reach a log line or an error.
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ClientCredentialsProvider,
  extractWWWAuthenticateParams,
  fetchToken,
  OAuthError,
  refreshAuthorization,
} from '@modelcontextprotocol/client';
import type { Logger } from 'pino';
import type { BusError } from '../../errors.js';
import type { VaultStore } from '../../store/contract.js';
import { UpstreamUnavailable } from '../errors.js';
import { discoverTarget, unionScopes } from './discovery.js';
import { needsLoginError } from './needs-login.js';
import type { UpstreamOAuthConfig } from './schema.js';
import { SealingKeyMissing } from './sealing.js';
import { type GrantRecord, type HeldGrant, TokenVault, timesFor } from './token-vault.js';

/** Long enough for one token request; a replica that dies holding the lock blocks the others this long at most. */
const LOCK_TTL_MS = 15_000;
/** A caller waiting for another replica's refresh gives up after this long (the call fails as unavailable). */
const REFRESH_WAIT_MS = 20_000;
/** While in needs_login, the store is re-read this often to notice a new login. */
const LOGIN_POLL_MS = 1000;
/** An access token this close to its expiry is not sent; the call waits for the refresh instead. */
const EXPIRY_MARGIN_MS = 250;

/** Errors from the token endpoint that no retry can fix: the grant or the client is gone. */
const GRANT_GONE = new Set(['invalid_grant', 'invalid_client', 'unauthorized_client']);

export interface UpstreamAuthOptions {
  name: string;
  url: string;
  oauth: UpstreamOAuthConfig;
  store: VaultStore;
  /** Loads the sealing key (throws SealingKeyMissing before the first login). */
  loadKey: () => Buffer;
  logger?: Logger | undefined;
  now?: () => number;
  /** Counts each token request (refresh or client-credentials grant) this process makes, e.g. as a metric. */
  onTokenRequest?: (() => void) | undefined;
}

export class UpstreamAuth {
  readonly name: string;
  private readonly holder = `${randomUUID()}`;
  private readonly now: () => number;
  private readonly logger: Logger | undefined;
  private vault: TokenVault | undefined;
  private held: HeldGrant | undefined;
  private refreshing: Promise<HeldGrant> | undefined;
  private refreshTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  /** Why refresh is impossible; undefined while the grant is usable. */
  private loginReason: string | undefined;
  /** The version that failed: a login writes a newer one. */
  private failedVersion = 0;
  private closed = false;
  /** Token requests this process made (refreshes and client-credentials grants), for tests and the dashboard. */
  refreshes = 0;
  /** Called when needs_login begins or ends (the connection reports its state, and reconnects after a login). */
  onChange: (() => void) | undefined;

  constructor(private readonly opts: UpstreamAuthOptions) {
    this.name = opts.name;
    this.now = opts.now ?? Date.now;
    this.logger = opts.logger;
  }

  get needsLogin(): boolean {
    return this.loginReason !== undefined;
  }

  needsLoginError(): BusError {
    return needsLoginError(this.name);
  }

  /** fetch with the bearer token; a 401 leads to one refresh and one resend (the upstream did nothing with it). */
  async fetch(url: string | URL, init: RequestInit = {}): Promise<Response> {
    const held = await this.beforeSending(() => this.usableGrant());
    const headers = new Headers(init.headers);
    headers.set('authorization', `Bearer ${held.grant.accessToken}`);
    const res = await fetch(url, { ...init, headers });
    if (res.status === 403) return this.checkStepUp(res);
    if (res.status !== 401) return res;
    await res.arrayBuffer().catch(() => undefined);
    this.logger?.info('upstream answered 401; refreshing the token once and resending');
    let fresh = await this.beforeSending(() => this.refresh(held.version, true));
    // We may have joined a refresh that found nothing due: this token was refused, so replace it regardless.
    if (fresh.version === held.version) fresh = await this.beforeSending(() => this.refresh(held.version, true));
    headers.set('authorization', `Bearer ${fresh.grant.accessToken}`);
    const again = await fetch(url, { ...init, headers });
    if (again.status === 403) return this.checkStepUp(again);
    if (again.status !== 401) return again;
    // A token minted a moment ago is refused too: this grant is no good for the resource (revoked at the resource,
    // or the upstream moved to another authorization server). Only a new login, which rediscovers, can fix that.
    await again.arrayBuffer().catch(() => undefined);
    this.enterNeedsLogin('the upstream refused a freshly refreshed token', fresh.version);
    throw this.needsLoginError();
  }

  /**
   * `403 insufficient_scope`: the upstream wants more scopes (step-up). That takes a person at the authorization
   * page, which a headless bus cannot start mid-call: the scopes are remembered for the next `toolbus login` and the
   * upstream goes to needs_login. The request was refused, so nothing was done. Any other 403 passes through.
   */
  private async checkStepUp(res: Response): Promise<Response> {
    const challenge = extractWWWAuthenticateParams(res);
    if (challenge.error !== 'insufficient_scope') return res;
    await res.arrayBuffer().catch(() => undefined);
    const held = this.held;
    const wanted = unionScopes(held?.grant.scope, challenge.scope) ?? '';
    if (wanted) {
      await this.openVault()
        .addWantedScope(wanted, (a, b) => unionScopes(a, b) ?? b)
        .catch((err: unknown) => this.logger?.warn({ err: (err as Error).message }, 'could not remember the scopes'));
    }
    this.enterNeedsLogin(`the upstream needs more scopes (${challenge.scope ?? 'unspecified'})`, held?.version ?? 0);
    throw this.needsLoginError();
  }

  /**
   * Getting a token happens before anything is sent: whatever goes wrong there (store unreachable, a bug) must reach
   * the pipeline as "nothing was sent", never as a lost request (which would make a write outcome_unknown).
   */
  private async beforeSending<T>(get: () => Promise<T>): Promise<T> {
    try {
      return await get();
    } catch (err) {
      if (err instanceof UpstreamUnavailable || (err as Error)?.name === 'BusError') throw err;
      this.logger?.warn({ err: (err as Error)?.message }, 'could not get an upstream token');
      throw new UpstreamUnavailable(this.name, 1000, 'no usable token');
    }
  }

  /** A grant whose access token may be sent now, refreshing first when it is about to expire. */
  private async usableGrant(): Promise<HeldGrant> {
    if (this.loginReason !== undefined) throw this.needsLoginError();
    const held = this.held ?? (await this.adoptFromStore());
    if (!held) {
      if (this.opts.oauth.grant === 'client_credentials') return this.refresh(0, true);
      this.enterNeedsLogin('no tokens stored', 0);
      throw this.needsLoginError();
    }
    const { expiresAt, refreshAt } = held.grant;
    const now = this.now();
    if (expiresAt !== undefined && now >= expiresAt - EXPIRY_MARGIN_MS) return this.refresh(held.version, false);
    if (refreshAt !== undefined && now >= refreshAt) void this.refresh(held.version, false).catch(() => undefined);
    return held;
  }

  /**
   * One refresh at a time in this process. `seenVersion` is the grant the caller found wanting; `force` (a 401)
   * refreshes even a grant that does not look due yet.
   */
  private refresh(seenVersion: number, force: boolean): Promise<HeldGrant> {
    this.refreshing ??= this.refreshAcrossReplicas(seenVersion, force).finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private isDue(g: GrantRecord): boolean {
    return g.refreshAt !== undefined && this.now() >= g.refreshAt;
  }

  private async refreshAcrossReplicas(seenVersion: number, force: boolean): Promise<HeldGrant> {
    const vault = this.openVault();
    const giveUpAt = this.now() + REFRESH_WAIT_MS;
    for (let attempt = 0; ; attempt++) {
      const current = await this.read(vault);
      // Somebody (another replica, or a new login) already wrote a newer grant that is not due: use it.
      if (current && current.version !== seenVersion && !this.isDue(current.grant)) return this.adopt(current);
      if (!current && this.opts.oauth.grant !== 'client_credentials') {
        this.enterNeedsLogin('no tokens stored', 0);
        throw this.needsLoginError();
      }
      if (await vault.lock(this.holder, LOCK_TTL_MS)) {
        try {
          // Re-read under the lock: the previous holder may have rotated the grant just before releasing it.
          const latest = await this.read(vault);
          if (latest && latest.version !== seenVersion && !this.isDue(latest.grant)) return this.adopt(latest);
          if (latest && !force && !this.isDue(latest.grant)) return this.adopt(latest);
          return await this.redeem(vault, latest);
        } finally {
          await vault.unlock(this.holder).catch(() => undefined);
        }
      }
      if (this.now() > giveUpAt) throw new UpstreamUnavailable(this.name, 1000, 'token refresh did not finish in time');
      await sleep(Math.min(200, 20 + attempt * 10));
    }
  }

  /** The token request itself, under the lock. */
  private async redeem(vault: TokenVault, held: HeldGrant | null): Promise<HeldGrant> {
    const { oauth } = this.opts;
    if (!held && oauth.grant !== 'client_credentials') {
      // Deleted under our feet (a logout between the two reads).
      this.enterNeedsLogin('no tokens stored', 0);
      throw this.needsLoginError();
    }
    let next: GrantRecord;
    try {
      next =
        held && oauth.grant !== 'client_credentials' ? await this.rotate(held) : await this.clientCredentials(held);
    } catch (err) {
      if (err instanceof OAuthError && GRANT_GONE.has(String(err.code))) {
        this.enterNeedsLogin(`the authorization server refused the grant (${err.code})`, held?.version ?? 0);
        throw this.needsLoginError();
      }
      if (err instanceof Error && err.message === 'no refresh token') {
        this.enterNeedsLogin('the server issued no refresh token', held?.version ?? 0);
        throw this.needsLoginError();
      }
      this.logger?.warn({ err: err instanceof Error ? err.message : String(err) }, 'token request failed');
      throw new UpstreamUnavailable(this.name, 1000, 'token request failed');
    }
    this.refreshes++;
    this.opts.onTokenRequest?.();
    // The old refresh token is spent now: the new grant must be stored, so retry the write a few times.
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const written = await vault.write(next, held?.version ?? 0);
        if (written) {
          this.logger?.info({ version: written.version }, 'upstream token refreshed');
          return this.adopt(written);
        }
        // Lost the compare-and-set: our lock expired and someone else wrote. Theirs wins; ours is still valid here.
        const theirs = await this.read(vault);
        if (theirs) return this.adopt(theirs);
      } catch (err) {
        this.logger?.warn({ err: (err as Error).message }, 'could not store the refreshed token; retrying');
        await sleep(100 * (attempt + 1));
      }
    }
    // Keep serving with the token in memory; the other replicas will refresh on their own.
    this.held = { grant: next, version: held?.version ?? 0 };
    return this.held;
  }

  private async rotate(held: HeldGrant): Promise<GrantRecord> {
    const g = held.grant;
    if (!g.refreshToken) throw new Error('no refresh token');
    const obtainedAt = this.now();
    const tokens = await refreshAuthorization(g.authorizationServerUrl, {
      ...(g.metadata ? { metadata: g.metadata } : {}),
      clientInformation: g.client,
      refreshToken: g.refreshToken,
      ...(g.resource ? { resource: g.resource } : {}),
    });
    const rest: GrantRecord = { ...g };
    delete rest.expiresAt;
    delete rest.refreshAt;
    return {
      ...rest,
      accessToken: tokens.access_token,
      refreshToken: tokens.refresh_token ?? g.refreshToken,
      obtainedAt,
      ...timesFor(obtainedAt, tokens.expires_in, this.opts.oauth.refreshAt),
    };
  }

  private async clientCredentials(held: HeldGrant | null): Promise<GrantRecord> {
    const { oauth, url } = this.opts;
    if (!oauth.clientId || !oauth.clientSecret) {
      throw new OAuthError('invalid_client', 'client_credentials needs oauth.clientId and oauth.clientSecret');
    }
    const target = held?.grant.metadata
      ? {
          authorizationServerUrl: held.grant.authorizationServerUrl,
          metadata: held.grant.metadata,
          resource: held.grant.resource ?? url,
          ...(held.grant.scope ? { scope: held.grant.scope } : {}),
        }
      : await discoverTarget(url, oauth);
    const provider = new ClientCredentialsProvider({
      clientId: oauth.clientId,
      clientSecret: oauth.clientSecret,
      expectedIssuer: target.metadata.issuer,
    });
    const obtainedAt = this.now();
    const tokens = await fetchToken(provider, target.authorizationServerUrl, {
      metadata: target.metadata,
      resource: target.resource,
      ...(target.scope ? { scope: target.scope } : {}),
    });
    return {
      upstreamUrl: url,
      grant: 'client_credentials',
      authorizationServerUrl: target.authorizationServerUrl,
      metadata: target.metadata,
      resource: target.resource,
      ...(target.scope ? { scope: target.scope } : {}),
      client: { client_id: oauth.clientId },
      accessToken: tokens.access_token,
      obtainedAt,
      ...timesFor(obtainedAt, tokens.expires_in, oauth.refreshAt),
    };
  }

  private openVault(): TokenVault {
    if (this.vault) return this.vault;
    try {
      this.vault = new TokenVault(this.name, this.opts.store, this.opts.loadKey());
    } catch (err) {
      if (err instanceof SealingKeyMissing) {
        this.enterNeedsLogin('no sealing key yet', 0);
        throw this.needsLoginError();
      }
      throw err;
    }
    return this.vault;
  }

  /** Reads and opens the stored grant; one that cannot be opened or belongs to another URL counts as absent. */
  private async read(vault: TokenVault): Promise<HeldGrant | null> {
    let held: HeldGrant | null;
    try {
      held = await vault.read();
    } catch (err) {
      if ((err as Error).name === 'StoreUnavailable')
        throw new UpstreamUnavailable(this.name, 1000, 'state store unreachable');
      this.logger?.warn('the stored upstream grant cannot be opened with this key; a new login is needed');
      return null;
    }
    if (held && held.grant.upstreamUrl !== this.opts.url) return null;
    return held;
  }

  private async adoptFromStore(): Promise<HeldGrant | null> {
    const held = await this.read(this.openVault());
    return held ? this.adopt(held) : null;
  }

  private adopt(held: HeldGrant): HeldGrant {
    if (this.held?.version !== held.version) {
      this.held = held;
      this.scheduleRefresh(held);
    }
    return this.held;
  }

  private scheduleRefresh(held: HeldGrant): void {
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    if (this.closed || held.grant.refreshAt === undefined) return;
    // A few ms late rather than early: a timer that fires before refreshAt would find nothing due.
    const delay = Math.max(0, held.grant.refreshAt - this.now() + 5);
    this.refreshTimer = setTimeout(() => {
      this.refreshTimer = undefined;
      if (this.held?.version !== held.version || this.loginReason !== undefined) return;
      this.refresh(held.version, false).catch((err: unknown) =>
        this.logger?.debug({ err: (err as Error).message }, 'scheduled token refresh failed'),
      );
    }, delay);
    this.refreshTimer.unref();
  }

  private enterNeedsLogin(reason: string, failedVersion: number): void {
    const entering = this.loginReason === undefined;
    if (entering) {
      this.logger?.warn({ reason, run: `toolbus login ${this.name}` }, 'upstream needs an operator to log in');
    }
    this.loginReason = reason;
    this.failedVersion = failedVersion;
    this.held = undefined;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    if (entering) this.onChange?.();
    if (this.pollTimer || this.closed) return;
    this.pollTimer = setInterval(() => void this.checkForLogin(), LOGIN_POLL_MS);
    this.pollTimer.unref();
  }

  /** While in needs_login: a newer grant in the store (a login, on any machine) ends it. */
  private async checkForLogin(): Promise<void> {
    try {
      this.vault ??= new TokenVault(this.name, this.opts.store, this.opts.loadKey());
      const held = await this.read(this.vault);
      if (!held || held.version === this.failedVersion) return;
      clearInterval(this.pollTimer);
      this.pollTimer = undefined;
      this.loginReason = undefined;
      this.adopt(held);
      this.logger?.info('found a new login for the upstream');
      this.onChange?.();
    } catch {
      // Key still missing or store unreachable: try again on the next tick.
    }
  }

  /** Reason for needs_login, for /readyz and the dashboard (never a token). */
  get status(): { state: 'ok' | 'needs_login'; reason?: string; refreshes: number } {
    return this.loginReason === undefined
      ? { state: 'ok', refreshes: this.refreshes }
      : { state: 'needs_login', reason: this.loginReason, refreshes: this.refreshes };
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.refreshTimer);
    clearInterval(this.pollTimer);
  }
}
