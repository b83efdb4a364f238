// What the rest of toolbus needs from upstream OAuth: the per-upstream UpstreamAuth a connection is built with.
import type { Logger } from 'pino';
import { isStdioUpstream, type UpstreamConfig } from '../../config/schema.js';
import type { VaultStore } from '../../store/contract.js';
import { keySource, loadSealingKey } from './sealing.js';
import { UpstreamAuth } from './upstream-auth.js';

/** The OAuth side of an HTTP upstream with an `oauth:` block; undefined for every other upstream. */
export function upstreamAuthFor(
  name: string,
  cfg: UpstreamConfig,
  store: VaultStore,
  baseDir: string,
  logger?: Logger,
  onTokenRequest?: () => void,
): UpstreamAuth | undefined {
  if (isStdioUpstream(cfg) || !cfg.oauth) return undefined;
  const oauth = cfg.oauth;
  return new UpstreamAuth({
    name,
    url: cfg.url,
    oauth,
    store,
    loadKey: () => loadSealingKey(keySource(oauth, baseDir), { create: oauth.grant === 'client_credentials' }),
    logger,
    onTokenRequest,
  });
}
