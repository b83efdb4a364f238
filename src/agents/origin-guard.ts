// The DNS-rebinding guard the MCP transport spec asks for: the Host header must name this bus (loopback names, the
// bound address, or a configured name) and a browser's Origin must be loopback or configured. Every route but
// /healthz passes through it: /mcp, /metrics, /readyz, the dashboard and its API.
import type { IncomingMessage } from 'node:http';
import { isUnspecifiedAddress, LOOPBACK_HOSTS } from './hosts.js';

function hostName(hostHeader: string): string {
  if (hostHeader.startsWith('[')) return hostHeader.slice(0, hostHeader.indexOf(']') + 1);
  const colon = hostHeader.lastIndexOf(':');
  return colon === -1 ? hostHeader : hostHeader.slice(0, colon);
}

export type OriginVerdict = 'ok' | 'host' | 'origin';

export function originGuard(
  boundHost: string,
  allowedHosts: readonly string[],
  allowedOrigins: readonly string[],
): (req: IncomingMessage) => OriginVerdict {
  const extraHosts = new Set(allowedHosts.map((h) => h.toLowerCase()));
  if (!LOOPBACK_HOSTS.has(boundHost) && !isUnspecifiedAddress(boundHost)) extraHosts.add(boundHost.toLowerCase());
  const origins = new Set(allowedOrigins);
  return (req) => {
    const host = req.headers.host;
    if (!host) return 'host';
    const name = hostName(host).toLowerCase();
    if (!LOOPBACK_HOSTS.has(name) && !extraHosts.has(name)) return 'host';
    const origin = req.headers.origin;
    if (origin === undefined || origins.has(origin)) return 'ok';
    try {
      return LOOPBACK_HOSTS.has(new URL(origin).hostname) ? 'ok' : 'origin';
    } catch {
      return 'origin';
    }
  };
}
