// A small identity provider on loopback for JWT tests: an issuer with a path (like a Keycloak realm), its discovery
// document and JWKS served over real HTTP, keys that can be rotated or dropped, and a signer for access tokens.
// It counts JWKS fetches so tests can see toolbus's caching and rate limiting from the outside.
import { createServer, type Server } from 'node:http';
import { type CryptoKey, exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from 'jose';

interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  publicJwk: JWK;
}

export interface TokenOptions {
  kid?: string;
  alg?: string;
  typ?: string;
  /** Seconds from now; negative for an expired token. Default 300. */
  expiresIn?: number;
  notBefore?: number;
  issuer?: string;
  audience?: string | string[];
}

export class JwksIssuer {
  issuer = '';
  jwksFetches = 0;
  /** The Cache-Control sent with the JWKS. */
  cacheControl = 'max-age=1';
  private keys: SigningKey[] = [];
  private server: Server | undefined;
  private nextKid = 1;

  static async start(path = '/realms/test'): Promise<JwksIssuer> {
    const issuer = new JwksIssuer();
    await issuer.addKey();
    await issuer.listen(path);
    return issuer;
  }

  /** Adds a signing key (the newest is used by default) and returns its kid. */
  async addKey(): Promise<string> {
    const { privateKey, publicKey } = await generateKeyPair('RS256');
    const kid = `k${this.nextKid++}`;
    const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };
    this.keys.push({ kid, privateKey: privateKey as CryptoKey, publicJwk });
    return kid;
  }

  /** Stops publishing a key (tokens signed with it must stop verifying once toolbus's cache expires). */
  dropKey(kid: string): void {
    this.keys = this.keys.filter((k) => k.kid !== kid);
  }

  get currentKid(): string {
    return this.keys.at(-1)!.kid;
  }

  /** A key pair never published, for bad-signature tokens. */
  async strangerKey(): Promise<CryptoKey> {
    return (await generateKeyPair('RS256')).privateKey as CryptoKey;
  }

  async sign(claims: JWTPayload, opts: TokenOptions = {}, withKey?: CryptoKey): Promise<string> {
    const key = this.keys.find((k) => k.kid === (opts.kid ?? this.currentKid));
    const now = Math.floor(Date.now() / 1000);
    const jwt = new SignJWT(claims)
      .setProtectedHeader({ alg: opts.alg ?? 'RS256', typ: opts.typ ?? 'at+jwt', kid: opts.kid ?? this.currentKid })
      .setIssuer(opts.issuer ?? this.issuer)
      .setIssuedAt(now)
      .setExpirationTime(now + (opts.expiresIn ?? 300));
    if (opts.audience !== undefined) jwt.setAudience(opts.audience);
    if (opts.notBefore !== undefined) jwt.setNotBefore(now + opts.notBefore);
    return jwt.sign(withKey ?? key!.privateKey);
  }

  private listen(path: string): Promise<void> {
    this.server = createServer((req, res) => {
      const url = req.url ?? '/';
      if (url === `${path}/.well-known/openid-configuration`) {
        const body = JSON.stringify({ issuer: this.issuer, jwks_uri: `${this.issuer}/protocol/openid-connect/certs` });
        res.writeHead(200, { 'content-type': 'application/json' }).end(body);
        return;
      }
      if (url === `${path}/protocol/openid-connect/certs`) {
        this.jwksFetches++;
        const body = JSON.stringify({ keys: this.keys.map((k) => k.publicJwk) });
        res.writeHead(200, { 'content-type': 'application/json', 'cache-control': this.cacheControl }).end(body);
        return;
      }
      res.writeHead(404).end();
    });
    return new Promise((resolve) => {
      this.server!.listen(0, '127.0.0.1', () => {
        const addr = this.server!.address();
        if (addr && typeof addr === 'object') this.issuer = `http://127.0.0.1:${addr.port}${path}`;
        resolve();
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.server?.closeAllConnections();
      this.server?.close(() => resolve());
    });
  }
}

/** An unsigned token (`alg: none`), which must never be accepted. */
export function unsignedToken(claims: JWTPayload): string {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
}
