// toolbus connect: a stdio bridge to a running bus, for clients that only launch commands.
import { parseArgs } from 'node:util';
import { runBridge } from '../agents/stdio-bridge.js';

export async function runConnect(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { url: { type: 'string' }, 'token-env': { type: 'string', default: 'TOOLBUS_TOKEN' } },
  });
  if (!values.url) {
    process.stderr.write('connect needs --url http://127.0.0.1:7410/mcp\n');
    return 2;
  }
  const envName = values['token-env'];
  const token = process.env[envName];
  if (!token) {
    process.stderr.write(`connect reads the agent token from $${envName}, which is not set\n`);
    return 2;
  }
  await runBridge({ url: values.url, token });
  return 0;
}
