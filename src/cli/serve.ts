// toolbus serve: load the config, start the bus, print the one "listening" line, stop cleanly on SIGINT/SIGTERM.
import { parseArgs } from 'node:util';
import { Bus } from '../bus.js';
import { ConfigError, type LoadedConfig, loadConfig } from '../config/load.js';
import { defaultConfigPath } from './config-path.js';
import { prepareDemoSecrets } from './demo.js';

export async function runServe(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string', short: 'c' },
      host: { type: 'string' },
      port: { type: 'string', short: 'p' },
      demo: { type: 'boolean', default: false },
    },
  });
  const file = defaultConfigPath(values.config);
  if (values.demo) prepareDemoSecrets();
  let loaded: LoadedConfig;
  try {
    loaded = loadConfig(file);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const port = values.port === undefined ? undefined : Number(values.port);
  if (port !== undefined && (!Number.isInteger(port) || port < 0 || port > 65535)) {
    process.stderr.write(`--port must be an integer from 0 to 65535\n`);
    return 2;
  }
  const bus = await Bus.start(loaded, {
    ...(values.host ? { host: values.host } : {}),
    ...(port !== undefined ? { port } : {}),
  });
  const host = bus.address.host.includes(':') ? `[${bus.address.host}]` : bus.address.host;
  process.stdout.write(`toolbus listening on http://${host}:${bus.address.port}/mcp\n`);
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      bus.logger.info({ signal }, 'stopping');
      void bus.stop().then(resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  return 0;
}
