// Who may do what on the console. Credentials (a bearer token, and/or a basic-auth user) grant
// everything; without them a request may only read, and only where http.openReadOnly says so.
// Without credentials at all the console must stay on loopback: the daemon refuses to start
// otherwise. The token is also accepted as a basic-auth password, so a browser's login prompt
// (which an <img> stream needs) works on a token-only device.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { AppConfig } from '../config/load.js';

export type Access = 'read' | 'change';

/** Only these count as loopback: any other address (even 127.0.0.2) needs credentials. */
const LOOPBACK_HOSTS = new Set(['127.0.0.1', '::1', 'localhost']);

export function isLoopback(host: string): boolean {
  return LOOPBACK_HOSTS.has(host.trim().toLowerCase());
}

/** Why the console must not start with this configuration, or null. */
export function authConfigProblem(http: AppConfig['http']): string | null {
  if ((http.username === '') !== (http.password === '')) {
    return 'http.username and http.password must be set together (or CRAD_HTTP_USERNAME and CRAD_HTTP_PASSWORD)';
  }
  if (!isLoopback(http.host) && !hasCredentials(http)) {
    return `http.host is ${http.host}, beyond loopback: set http.token (CRAD_HTTP_TOKEN) or http.username and http.password (CRAD_HTTP_USERNAME, CRAD_HTTP_PASSWORD), or bind http.host to 127.0.0.1`;
  }
  return null;
}

function hasCredentials(http: AppConfig['http']): boolean {
  return http.token !== '' || http.username !== '';
}

/** Constant-time comparison of a presented secret (hashed first: lengths must not leak either). */
function sameSecret(presented: string, expected: string): boolean {
  const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();
  return expected !== '' && timingSafeEqual(digest(presented), digest(expected));
}

export class ConsoleAuth {
  constructor(private readonly http: AppConfig['http']) {}

  /** Whether a request carrying this Authorization header may have `access`. */
  allows(authorization: string | undefined, access: Access): boolean {
    if (!hasCredentials(this.http)) return true; // loopback only (checked at start)
    if (access === 'read' && this.http.openReadOnly) return true;
    return this.authenticated(authorization);
  }

  private authenticated(authorization: string | undefined): boolean {
    if (!authorization) return false;
    const [scheme, value = ''] = authorization.trim().split(/\s+/, 2);
    if (scheme?.toLowerCase() === 'bearer') return sameSecret(value, this.http.token);
    if (scheme?.toLowerCase() !== 'basic') return false;
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return false;
    const user = decoded.slice(0, colon);
    const password = decoded.slice(colon + 1);
    const userMatches = this.http.username !== '' && sameSecret(user, this.http.username) && sameSecret(password, this.http.password);
    return userMatches || sameSecret(password, this.http.token);
  }
}
