// Host names the HTTP front treats specially: loopback names (always accepted in Host), and the unspecified address
// (binding to it listens everywhere, so it is never a name clients use).
export const LOOPBACK_HOSTS: ReadonlySet<string> = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

/** The IPv4 or IPv6 unspecified address ("listen on every interface"). */
export function isUnspecifiedAddress(host: string): boolean {
  return host === '::' || /^0+(\.0+){3}$/.test(host);
}
