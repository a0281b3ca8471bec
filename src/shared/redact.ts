// Credentials travel inside URLs (camera streams, the broker URL, GStreamer pipelines that embed
// them); anything that logs, throws or answers with such text passes it through here first.

export const REDACTED = '[redacted]';

/** Query parameters whose values are secrets (compared case-insensitively). */
export const SECRET_QUERY_PARAMS = [
  'token', 'access_token', 'password', 'passwd', 'pwd', 'secret', 'key', 'apikey', 'api_key', 'auth', 'sig', 'signature', 'credentials',
] as const;

// The userinfo runs to the last '@' before the path, so a password containing '@' is hidden whole.
const USERINFO = /((?:[a-z][a-z0-9+.-]*:)?\/\/)[^/\s"']*@/gi;
// Quotes and whitespace end a value too: pipelines quote their URLs or separate elements by spaces.
const SECRET_QUERY = new RegExp(`([?&;](?:${SECRET_QUERY_PARAMS.join('|')})=)[^&#;\\s"']+`, 'gi');

/**
 * Hide the credentials of every URL in `text` (a bare URL, a GStreamer pipeline, an error
 * message): `user:password@` becomes `[redacted]@`, and the value of each secret query
 * parameter becomes `[redacted]` while its name stays, so the reader still sees what was set.
 */
export function redactUrls(text: string): string {
  return text.replace(USERINFO, `$1${REDACTED}@`).replace(SECRET_QUERY, `$1${REDACTED}`);
}
