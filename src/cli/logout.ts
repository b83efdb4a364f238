// toolbus logout NAME: forgets an OAuth upstream's stored tokens. Running replicas go to needs_login at their next
// refresh or 401 (the access token they hold in memory stays valid at the server until it expires).
import { parseArgs } from 'node:util';
import { openVault } from '../store/vault-open.js';
import { grantBlobName, wantedScopeBlobName } from '../upstreams/oauth/token-vault.js';
import { oauthUpstream } from './oauth-upstream.js';

const HELP = `usage: toolbus logout NAME [--config FILE]

Deletes the stored OAuth tokens of upstream NAME from the state store. The upstream needs \`toolbus login NAME\` again.
`;

export async function runLogout(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const target = oauthUpstream('logout', positionals, values.config, HELP);
  if (!target.ok) return target.code;
  const { name, loaded } = target;
  const { vault, close } = await openVault(loaded.config.store);
  try {
    await vault.deleteBlob(grantBlobName(name));
    await vault.deleteBlob(wantedScopeBlobName(name));
  } finally {
    await close();
  }
  process.stdout.write(`logged out of ${name}; its tokens are deleted from the store\n`);
  return 0;
}
