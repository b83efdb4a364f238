#!/usr/bin/env node
// toolbus command line: one file per command; this one only picks the command.
import { runAudit } from './audit.js';
import { runCheck } from './check.js';
import { runClientConfig } from './client-config.js';
import { runConnect } from './connect.js';
import { runInit } from './init.js';
import { runLogin } from './login.js';
import { runLogout } from './logout.js';
import { runServe } from './serve.js';
import { runToken } from './token.js';

const USAGE = `usage: toolbus <command> [options]

commands:
  serve          [--config FILE] [--host H] [--port N] [--demo]   run the bus
  check          [--config FILE]                                 validate config, connect, print the catalog
  init           [--from .mcp.json] [--out FILE]                 write a starter config
  client-config  --agent ID [--config FILE] [--url URL]          print the .mcp.json entry for an agent
  connect        --url URL [--token-env NAME]                    stdio bridge to a running bus
  audit          [--config FILE] [--since 1h|ISO] [--tool NAME] [--limit N] [--json]   show the write audit trail
  token create   --agent ID [--ttl 1h] [--config FILE]           print a short-lived signed token for an agent
  login NAME     [--config FILE] [--no-browser]                  log in once to an OAuth upstream (tokens to the store)
  logout NAME    [--config FILE]                                 forget an OAuth upstream's stored tokens
`;

const commands: Record<string, (argv: string[]) => Promise<number>> = {
  serve: runServe,
  check: runCheck,
  init: runInit,
  'client-config': runClientConfig,
  connect: runConnect,
  audit: runAudit,
  token: runToken,
  login: runLogin,
  logout: runLogout,
};

const [name, ...rest] = process.argv.slice(2);
const command = name ? commands[name] : undefined;
if (!command) {
  process.stderr.write(USAGE);
  process.exit(name === undefined || name === '--help' || name === 'help' ? 0 : 2);
}
command(rest).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`toolbus ${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
