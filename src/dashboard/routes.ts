// The operator's routes beside /mcp: /healthz (liveness, answers anything), /readyz (upstream states), /metrics
// (Prometheus), the dashboard page and its JSON API. The HTTP front has already applied the Host/Origin guard to all
// of them but /healthz. The dashboard API needs the admin token when the bus listens beyond loopback, and shows lease
// scopes in clear only to a viewer that presents it.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Metrics } from '../observe/metrics.js';
import { dashboardPage } from './page.js';

export interface AdminRouteOptions {
  /** The admin token from config, if any. */
  adminToken: () => string | undefined;
  /** True when the bus listens on loopback only. */
  loopbackOnly: boolean;
  dashboardEnabled: () => boolean;
  readiness: () => { ready: boolean; upstreams: Record<string, string> };
  metrics: Metrics;
  snapshot: (admin: boolean) => Promise<Record<string, unknown>>;
  redact: (text: string) => string;
  logger: Logger;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

function presentsToken(req: IncomingMessage, token: string | undefined): boolean {
  if (!token) return false;
  const header = req.headers.authorization ?? '';
  if (!header.toLowerCase().startsWith('bearer ')) return false;
  return timingSafeEqual(digest(header.slice(7).trim()), digest(token));
}

export function adminRoutes(opts: AdminRouteOptions) {
  const send = (res: ServerResponse, status: number, type: string, body: string) => {
    const text = opts.redact(body);
    res.writeHead(status, {
      'content-type': type,
      'cache-control': 'no-store',
      'content-length': Buffer.byteLength(text),
    });
    res.end(text);
  };
  return function route(req: IncomingMessage, res: ServerResponse, path: string): boolean | Promise<boolean> {
    if (req.method !== 'GET') return false;
    switch (path) {
      case '/healthz':
        send(res, 200, 'text/plain', 'ok');
        return true;
      case '/readyz': {
        const r = opts.readiness();
        send(res, r.ready ? 200 : 503, 'application/json', JSON.stringify(r));
        return true;
      }
      case '/metrics':
        return opts.metrics.render().then(({ contentType, body }) => {
          send(res, 200, contentType, body);
          return true;
        });
      case '/':
        if (!opts.dashboardEnabled()) return false;
        send(res, 200, 'text/html; charset=utf-8', dashboardPage());
        return true;
      case '/api/dashboard': {
        if (!opts.dashboardEnabled()) return false;
        const admin = presentsToken(req, opts.adminToken());
        if (!admin && !opts.loopbackOnly) {
          send(
            res,
            401,
            'application/json',
            JSON.stringify({ error: 'the dashboard API needs the admin token (server.adminToken) on this address' }),
          );
          return true;
        }
        return opts.snapshot(admin).then((snap) => {
          send(res, 200, 'application/json', JSON.stringify(snap));
          return true;
        });
      }
      default:
        return false;
    }
  };
}
