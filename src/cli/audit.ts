// `crad-edge audit`: the audit log of the config's state directory, newest first, a page at a time.
import { loadLayered } from '../config/layers.js';
import { AuditLog, type AuditEntry } from '../service/audit.js';

export interface AuditOptions {
  config?: string;
  limit?: number;
  before?: number;
  json?: boolean;
}

export function auditCommand(opts: AuditOptions): number {
  let page;
  try {
    page = AuditLog.forConfig(loadLayered(opts.config).config).read({ limit: opts.limit, before: opts.before });
  } catch (err) {
    console.error((err as Error).message);
    return 1;
  }
  for (const entry of page.entries) console.log(opts.json ? JSON.stringify(entry) : line(entry));
  if (page.next !== null) console.error(`more: crad-edge audit --before ${page.next}`);
  return 0;
}

function line(e: AuditEntry): string {
  const who = [e.actor.kind, e.actor.clientId, e.actor.keyFingerprint, e.actor.file, e.actor.username].filter(Boolean).join(' ');
  const revisions = e.revisionBefore !== undefined && e.revisionBefore !== null ? `  r${e.revisionBefore}->r${e.revisionAfter ?? '?'}` : '';
  const changes = (e.changes ?? []).map((c) => `${c.key}: ${JSON.stringify(c.old)} -> ${JSON.stringify(c.new)}`).join('; ');
  return `#${e.seq} ${e.at} ${e.kind} ${e.outcome} by ${who}${revisions}${e.transaction ? `  tx=${e.transaction}` : ''}${changes ? `  ${changes}` : ''}${e.error ? `  error: ${e.error}` : ''}`;
}
