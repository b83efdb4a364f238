// The upstream that `toolbus login NAME` and `toolbus logout NAME` act on: named once on the command line, and it must
// be an HTTP upstream with an `oauth:` block in the config.
import { type LoadedConfig, loadConfig } from '../config/load.js';
import { isStdioUpstream } from '../config/schema.js';
import type { UpstreamOAuthConfig } from '../upstreams/oauth/schema.js';
import { defaultConfigPath } from './config-path.js';

export type OAuthTarget =
  | { ok: true; name: string; url: string; loaded: LoadedConfig; oauth: UpstreamOAuthConfig }
  | { ok: false; code: number };

export function oauthUpstream(
  command: 'login' | 'logout',
  positionals: string[],
  configPath: string | undefined,
  usage: string,
): OAuthTarget {
  const name = positionals[0];
  if (!name || positionals.length > 1) {
    process.stderr.write(usage);
    return { ok: false, code: 2 };
  }
  const loaded = loadConfig(defaultConfigPath(configPath));
  const upstream = loaded.config.upstreams[name];
  if (!upstream || isStdioUpstream(upstream) || !upstream.oauth) {
    process.stderr.write(`toolbus ${command}: ${name} is not an HTTP upstream with an oauth: block in the config\n`);
    return { ok: false, code: 2 };
  }
  return { ok: true, name, url: upstream.url, loaded, oauth: upstream.oauth };
}
