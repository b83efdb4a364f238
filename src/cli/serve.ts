// toolbus serve: load the config, start the bus, print the one "listening" line, drain and stop on SIGINT/SIGTERM.
import { dirname, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Bus } from '../bus.js';
import { ConfigError, type LoadedConfig, loadConfig } from '../config/load.js';
import { defaultConfigPath } from './config-path.js';
import { announceDemoToken, type DemoSecrets, prepareDemoSecrets } from './demo.js';
import { writeRunFile } from './run-file.js';

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
  let demo: DemoSecrets | undefined;
  if (values.demo) demo = prepareDemoSecrets(dirname(resolve(file)));
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
  if (demo) announceDemoToken(demo, loaded.config);
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
  const url = `http://${host}:${bus.address.port}/mcp`;
  const removeRunFile = writeRunFile(file, url);
  process.stdout.write(`toolbus listening on ${url}\n`);
  await new Promise<void>((done) => {
    const stop = (signal: string) => {
      bus.logger.info(
        { signal, inFlight: bus.callsInFlight, graceMs: bus.config.server.shutdownGraceMs },
        'stopping: draining calls in flight',
      );
      // A second signal means "now": the operator does not want to wait for the grace period.
      process.once(signal, () => process.exit(130));
      void bus.stop().then(done);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  removeRunFile();
  bus.logger.info('stopped');
  return 0;
}
