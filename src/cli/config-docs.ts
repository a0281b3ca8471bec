// The configuration reference, generated from the convict schema so the README never drifts.
import { cameraSchema, schema } from '../config/schema.js';

interface Leaf {
  doc: string;
  format: unknown;
  default: unknown;
  env?: string;
  sensitive?: boolean;
}

function isLeaf(node: unknown): node is Leaf {
  return typeof node === 'object' && node !== null && 'doc' in node && 'default' in node;
}

function formatName(format: unknown): string {
  if (Array.isArray(format)) return format.map((f) => JSON.stringify(f)).join(' \\| ');
  if (typeof format === 'function') return format.name.toLowerCase();
  return String(format);
}

function rows(node: Record<string, unknown>, prefix: string): string[] {
  const out: string[] = [];
  for (const [key, value] of Object.entries(node)) {
    const name = prefix ? `${prefix}.${key}` : key;
    if (isLeaf(value)) {
      const def = value.sensitive && value.default ? '(secret)' : JSON.stringify(value.default);
      const env = value.env ? ` Env: \`${value.env}\`.` : '';
      out.push(`| \`${name}\` | ${formatName(value.format)} | \`${def}\` | ${value.doc.replace(/\|/g, '\\|')}${env} |`);
    } else if (typeof value === 'object' && value !== null) {
      out.push(...rows(value as Record<string, unknown>, name));
    }
  }
  return out;
}

export function configReference(): string {
  const header = '| key | type | default | meaning |\n| --- | --- | --- | --- |';
  return [
    '### Daemon keys',
    '',
    header,
    ...rows(schema as unknown as Record<string, unknown>, ''),
    '',
    '### Camera fields (each entry of `cameras`)',
    '',
    header,
    ...rows(cameraSchema as unknown as Record<string, unknown>, ''),
    '',
  ].join('\n');
}
