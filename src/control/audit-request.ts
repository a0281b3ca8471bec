// audit/get: {"transaction"?, "limit"?: 1..100, "before"?: seq} (schemas/audit-response.schema.json answers it).
export type AuditRequest = { ok: true; transaction: string | null; limit?: number; before?: number } | { ok: false; transaction: string | null; error: string };

export function parseAuditRequest(payload: Buffer, transaction: string | null): AuditRequest {
  let request: { limit?: unknown; before?: unknown } = {};
  try {
    if (payload.length > 0) request = JSON.parse(payload.toString('utf8')) as typeof request;
  } catch {
    return { ok: false, transaction, error: 'request must be JSON: {"limit"?: 1..100, "before"?: seq}' };
  }
  const isCount = (v: unknown) => v === undefined || v === null || (Number.isSafeInteger(v) && (v as number) >= 1);
  if (!isCount(request.limit) || !isCount(request.before)) return { ok: false, transaction, error: 'limit and before must be positive integers' };
  return {
    ok: true, transaction,
    ...(typeof request.limit === 'number' ? { limit: request.limit } : {}),
    ...(typeof request.before === 'number' ? { before: request.before } : {}),
  };
}
