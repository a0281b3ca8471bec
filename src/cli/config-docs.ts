// The configuration reference, generated from the convict schema so the README never drifts.
import { APPLY, REMOTE, cameraSchema, describeFormat, leaves, schema, type SchemaTree } from '../config/schema.js';
import { remotePolicy } from '../config/policy.js';

function rows(tree: SchemaTree): string[] {
  return leaves(tree).map(([key, leaf]) => {
    const def = leaf.docDefault ?? (leaf.sensitive && leaf.default ? '(secret)' : JSON.stringify(leaf.default));
    const env = leaf.env ? ` Env: \`${leaf.env}\`.` : '';
    const recipe = leaf.recipe ? ' Recipe: a recipe may override it.' : '';
    return `| \`${key}\` | ${describeFormat(leaf)} | \`${def}\` | ${APPLY[leaf.apply].reads} | ${remotePolicy(leaf)} | ${leaf.doc.replace(/\|/g, '\\|')}${env}${recipe} |`;
  });
}

export function configReference(): string {
  const header = '| key | type | default | a change applies | remote push | meaning |\n| --- | --- | --- | --- | --- | --- |';
  return [
    `"A change applies": ${Object.values(APPLY).map((a) => `${a.reads}: ${a.means}`).join('; ')} (a push answers what waits for`,
    'a restart in `restartRequired`).',
    `"Remote push": ${Object.entries(REMOTE).map(([name, r]) => `${name}: ${r.means}`).join('; ')}.`,
    '',
    '### Daemon keys',
    '',
    header,
    ...rows(schema as unknown as SchemaTree),
    '',
    '### Camera fields (each entry of `cameras`)',
    '',
    header,
    ...rows(cameraSchema as unknown as SchemaTree),
    '',
  ].join('\n');
}
