// The `oauth:` block of an HTTP upstream (DESIGN.md section 15). Empty means: discover everything from the upstream's
// 401 and register the client dynamically. Kept here, beside the code that reads it; src/config/schema.ts only
// mounts it on the HTTP upstream.
import { z } from 'zod';

export const UpstreamOAuthSchema = z.strictObject({
  /** `authorization_code` needs one `toolbus login NAME`; `client_credentials` is for machine clients, no login. */
  grant: z.enum(['authorization_code', 'client_credentials']).default('authorization_code'),
  /** A client registered beforehand; without it the bus uses a client ID metadata document or registers (DCR). */
  clientId: z.string().min(1).optional(),
  /** For confidential clients; normally a `${env:...}` or `${file:...}` reference. */
  clientSecret: z.string().min(1).optional(),
  /** HTTPS URL of this client's ID metadata document, used as client_id where the server supports that. */
  clientMetadataUrl: z.url().optional(),
  /** Scopes to ask for; default: what the upstream's 401 or its resource metadata asks for. */
  scopes: z.array(z.string().min(1)).optional(),
  /** Loopback port of the login redirect URI (0: any free port; fix it when the client was registered by hand). */
  redirectPort: z.number().int().min(0).max(65535).default(0),
  /** 32-byte AES-256-GCM key sealing the stored tokens (base64 or hex), normally a `${env:...}` reference. */
  key: z.string().min(1).optional(),
  /** Without `key`: a key file, created with mode 0600 on the first login (relative to the config file). */
  keyFile: z.string().min(1).default('.toolbus/oauth.key'),
  /** Refresh once this fraction of an access token's lifetime has passed. */
  refreshAt: z.number().gt(0).lt(1).default(0.8),
});

export type UpstreamOAuthConfig = z.infer<typeof UpstreamOAuthSchema>;
