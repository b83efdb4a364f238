// toolbus login NAME: one operator login for an OAuth upstream; the tokens go to the state store, sealed, and every
// bus replica on that store uses (and refreshes) them from then on.
import { spawn } from 'node:child_process';
import { parseArgs } from 'node:util';
import { openVault } from '../store/vault-open.js';
import { loginWithAuthorizationCode } from '../upstreams/oauth/authorization-code.js';
import { keySource, loadSealingKey } from '../upstreams/oauth/sealing.js';
import { TokenVault } from '../upstreams/oauth/token-vault.js';
import { oauthUpstream } from './oauth-upstream.js';

const HELP = `usage: toolbus login NAME [--config FILE] [--no-browser] [--timeout SECONDS]

Logs in to the OAuth upstream NAME once (authorization code + PKCE). The authorization URL is printed on a line of
its own (and opened in a browser unless --no-browser); the redirect comes back to a loopback listener on 127.0.0.1.
The tokens are stored in the state store, sealed with AES-256-GCM; running bus replicas pick them up by themselves.
`;

function openBrowser(url: string): void {
  const cmd = process.platform === 'darwin' ? 'open' : process.platform === 'win32' ? 'explorer' : 'xdg-open';
  try {
    const child = spawn(cmd, [url], { stdio: 'ignore', detached: true });
    child.on('error', () => {});
    child.unref();
  } catch {
    // No browser here: the printed URL is enough.
  }
}

export async function runLogin(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      'no-browser': { type: 'boolean', default: false },
      timeout: { type: 'string', default: '300' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const target = oauthUpstream('login', positionals, values.config, HELP);
  if (!target.ok) return target.code;
  const { name, url: upstreamUrl, loaded, oauth } = target;
  if (oauth.grant === 'client_credentials') {
    process.stdout.write(`${name} uses client_credentials: the bus gets its tokens itself, no login needed\n`);
    return 0;
  }
  const timeoutMs = Number(values.timeout) * 1000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    process.stderr.write('--timeout takes a number of seconds\n');
    return 2;
  }
  const key = loadSealingKey(keySource(oauth, loaded.baseDir), { create: true });
  const { vault, close } = await openVault(loaded.config.store);
  try {
    await loginWithAuthorizationCode({
      upstream: name,
      url: upstreamUrl,
      oauth,
      vault: new TokenVault(name, vault, key),
      timeoutMs,
      present: (url) => {
        process.stdout.write(`Open this URL to log in to ${name}:\n${url}\n`);
        if (!values['no-browser']) openBrowser(url);
      },
    });
  } finally {
    await close();
  }
  process.stdout.write(`logged in to ${name}; tokens stored (encrypted) in the ${loaded.config.store.kind} store\n`);
  return 0;
}
