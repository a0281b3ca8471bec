// Every command's answer echoes the request's "transaction", also when the request itself is refused.

/**
 * The request's "transaction" when the payload is a JSON object with a string one; otherwise null
 * (not JSON, not an object, no transaction or not a string). Reads only: checking it is the
 * command's own business.
 */
export function requestTransaction(payload: Buffer): string | null {
  try {
    const parsed: unknown = JSON.parse(payload.toString('utf8'));
    const transaction = (parsed as { transaction?: unknown } | null)?.transaction;
    return typeof transaction === 'string' ? transaction : null;
  } catch {
    return null;
  }
}
