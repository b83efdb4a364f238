#!/usr/bin/env node
// toolbus command line: one file per command; this one only picks the command and answers --help and --version.
import { toolbusVersion } from '../version.js';
import { runAudit } from './audit.js';
import { runCheck } from './check.js';
import { runClientConfig } from './client-config.js';
import { runConnect } from './connect.js';
import { runInit } from './init.js';
import { runLogin } from './login.js';
import { runLogout } from './logout.js';
import { runServe } from './serve.js';
import { runToken } from './token.js';

interface Command {
  run: (argv: string[]) => Promise<number>;
  usage: string;
  help: string;
}

const commands: Record<string, Command> = {
  serve: {
    run: runServe,
    usage: '[--config FILE] [--host H] [--port N] [--demo]',
    help: `Runs the bus. Prints "toolbus listening on http://H:N/mcp" once every upstream has been tried.
  --config, -c FILE  config file (default ./toolbus.yaml)
  --host H           address to bind (overrides server.host)
  --port, -p N       port (overrides server.port; 0 picks a free one)
  --demo             create the example config's demo secrets under .toolbus/ and print the demo agent's token
SIGTERM/SIGINT drain: new requests get 503, calls in flight get server.shutdownGraceMs to finish. SIGHUP reloads.`,
  },
  check: {
    run: runCheck,
    usage: '[--config FILE] [--timeout MS]',
    help: `Validates the config, connects to every upstream (in parallel), and prints each tool's kind, key rule and
lease, and the warnings to read. A failing upstream is shown with its own error output.
  --config, -c FILE  config file (default ./toolbus.yaml)
  --timeout MS       how long to wait for each upstream (default: its connectTimeoutMs)
Exit code: 0 all connected, 1 an upstream failed, 2 the config is invalid.`,
  },
  init: {
    run: runInit,
    usage: '[--from .mcp.json] [--out FILE] [--force] [--no-connect]',
    help: `Writes a starter config, or converts a client's .mcp.json: every server becomes an upstream (nothing is
dropped silently: what cannot be converted is written as a comment). Unless --no-connect, each server is started
and its tools are written as commented policies from their annotations, for you to review.
  --from FILE        the .mcp.json to convert
  --out FILE         where to write (default toolbus.yaml)
  --force            overwrite an existing file
  --no-connect       do not start the servers; write no tool policies`,
  },
  'client-config': {
    run: runClientConfig,
    usage: '--agent ID [--config FILE] [--url URL] [--name NAME] [--upstream NAME]',
    help: `Prints the .mcp.json entry an agent needs. The URL is the running bus's (when one runs from this config),
else the config's. Secrets referenced by the config need not be set.
  --agent ID         the agent
  --url URL          override the URL
  --name NAME        the server name in the entry (default toolbus, or the upstream's name)
  --upstream NAME    an entry for /mcp/NAME: that upstream alone, under its own names`,
  },
  connect: {
    run: runConnect,
    usage: '--url URL [--token-env NAME]',
    help: `A stdio bridge to a running bus, for clients that can only launch a command. Survives a bus restart: the
session is re-initialized and the request that found it gone is sent again.
  --url URL          the bus's /mcp URL
  --token-env NAME   the environment variable holding the agent token (default TOOLBUS_TOKEN)`,
  },
  audit: {
    run: runAudit,
    usage: '[--config FILE] [--since 1h|ISO] [--tool NAME] [--limit N] [--json]',
    help: `Shows the audit trail of write calls from the store (read-only; works while a bus runs). Secrets referenced
by the config need not be set.`,
  },
  login: {
    run: runLogin,
    usage: 'NAME [--config FILE] [--no-browser] [--timeout S]',
    help: `Logs in once to an OAuth upstream (authorization code with PKCE): prints the authorization URL on a line of its
own (and opens a browser where there is one), receives the code on a loopback redirect, and stores the tokens in
the state store, encrypted. Every bus on that store then uses and refreshes them.`,
  },
  logout: {
    run: runLogout,
    usage: 'NAME [--config FILE]',
    help: "Forgets an OAuth upstream's stored tokens; the upstream goes to needs_login until the next login.",
  },
  token: {
    run: runToken,
    usage: 'create --agent ID [--ttl 1h] [--config FILE]',
    help: 'Prints a short-lived token signed by toolbus for an agent (auth.signing must be configured).',
  },
};

function usage(): string {
  const lines = Object.entries(commands).map(([n, c]) => `  ${n.padEnd(14)} ${c.usage}`);
  return `usage: toolbus <command> [options]\n\ncommands:\n${lines.join('\n')}\n\n'toolbus <command> --help' for more; 'toolbus --version'.\n`;
}

const [name, ...rest] = process.argv.slice(2);
if (name === '--version' || name === '-v' || name === 'version') {
  process.stdout.write(`toolbus ${toolbusVersion()}\n`);
  process.exit(0);
}
const command = name ? commands[name] : undefined;
if (!command) {
  const asked = name === undefined || name === '--help' || name === '-h' || name === 'help';
  (asked ? process.stdout : process.stderr).write(usage());
  if (!asked) process.stderr.write(`unknown command ${JSON.stringify(name)}\n`);
  process.exit(asked ? 0 : 2);
}
if (rest.includes('--help') || rest.includes('-h')) {
  process.stdout.write(`usage: toolbus ${name} ${command.usage}\n\n${command.help}\n`);
  process.exit(0);
}
command.run(rest).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`toolbus ${name}: ${err instanceof Error ? err.message : String(err)}\n`);
    // Exit now: a failed start must not linger on a handle nobody will close.
    process.exit(1);
  },
);
