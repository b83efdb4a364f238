// One upstream's grant in the state store: what a login (or a client-credentials request) produced, sealed, under a
// version that every write compares and sets. The record carries what a refresh needs (client, authorization server
// metadata, resource), so `serve` never has to rediscover or re-register.
import type { AuthorizationServerMetadata, OAuthClientInformationMixed } from '@modelcontextprotocol/client';
import type { VaultStore } from '../../store/contract.js';
import { seal, unseal } from './sealing.js';

export interface GrantRecord {
  /** The upstream URL the tokens were issued for: a changed URL needs a new login. */
  upstreamUrl: string;
  grant: 'authorization_code' | 'client_credentials';
  authorizationServerUrl: string;
  metadata?: AuthorizationServerMetadata;
  /** RFC 8707 resource indicator, exactly as the resource metadata spelled it. */
  resource?: string;
  scope?: string;
  client: OAuthClientInformationMixed;
  accessToken: string;
  refreshToken?: string;
  obtainedAt: number;
  /** Absent when the server gave no expires_in: then only a 401 triggers a refresh. */
  expiresAt?: number;
  refreshAt?: number;
}

/** Where an upstream's grant lives in the store's vault. */
export function grantBlobName(upstream: string): string {
  return `oauth/${upstream}`;
}

/** Scopes an upstream asked for with `403 insufficient_scope` (step-up); not secret, kept apart from the grant. */
export function wantedScopeBlobName(upstream: string): string {
  return `oauth/${upstream}/wanted-scope`;
}

export interface HeldGrant {
  grant: GrantRecord;
  version: number;
}

export class TokenVault {
  readonly blobName: string;
  private readonly label: string;

  constructor(
    readonly upstream: string,
    private readonly store: VaultStore,
    private readonly key: Buffer,
  ) {
    this.blobName = grantBlobName(upstream);
    this.label = `toolbus-oauth:${upstream}`;
  }

  /** Throws when the blob cannot be opened (another key): the caller treats that as "log in again". */
  async read(): Promise<HeldGrant | null> {
    const blob = await this.store.getBlob(this.blobName);
    if (!blob) return null;
    const grant = JSON.parse(unseal(this.key, this.label, blob.value)) as GrantRecord;
    return { grant, version: blob.version };
  }

  /** Compare-and-set on the version read; null when somebody wrote in between. */
  async write(grant: GrantRecord, expectedVersion: number): Promise<HeldGrant | null> {
    const version = await this.store.putBlob(
      this.blobName,
      seal(this.key, this.label, JSON.stringify(grant)),
      expectedVersion,
    );
    return version === null ? null : { grant, version };
  }

  /** Writes whatever is there now (a login replaces any previous grant). */
  async replace(grant: GrantRecord): Promise<HeldGrant> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const cur = await this.store.getBlob(this.blobName);
      const held = await this.write(grant, cur?.version ?? 0);
      if (held) return held;
    }
    throw new Error('the stored grant keeps changing; try again');
  }

  async wantedScope(): Promise<string | undefined> {
    return (await this.store.getBlob(wantedScopeBlobName(this.upstream)))?.value || undefined;
  }

  /** Remembers more scopes for the next login (a separate blob: never races a refresh writing the grant). */
  async addWantedScope(scope: string, merge: (a: string | undefined, b: string) => string): Promise<void> {
    const name = wantedScopeBlobName(this.upstream);
    for (let attempt = 0; attempt < 10; attempt++) {
      const cur = await this.store.getBlob(name);
      if ((await this.store.putBlob(name, merge(cur?.value, scope), cur?.version ?? 0)) !== null) return;
    }
  }

  forget(): Promise<void> {
    return this.store.deleteBlob(this.blobName);
  }

  lock(holder: string, ttlMs: number): Promise<boolean> {
    return this.store.tryLock(`${this.blobName}/refresh`, holder, ttlMs);
  }

  unlock(holder: string): Promise<void> {
    return this.store.unlock(`${this.blobName}/refresh`, holder);
  }
}

/** When to refresh: `fraction` of the lifetime after it was obtained. */
export function timesFor(
  obtainedAt: number,
  expiresInSec: number | undefined,
  fraction: number,
): { expiresAt?: number; refreshAt?: number } {
  if (expiresInSec === undefined || !Number.isFinite(expiresInSec) || expiresInSec <= 0) return {};
  const life = expiresInSec * 1000;
  return { expiresAt: obtainedAt + life, refreshAt: obtainedAt + Math.floor(life * fraction) };
}
