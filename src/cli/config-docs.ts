// The configuration reference, generated from the convict schema so the README never drifts.
import { cameraSchema, describeFormat, leaves, schema, type Leaf, type SchemaTree } from '../config/schema.js';
import { remotePolicy } from '../config/policy.js';

/** How each `apply` value reads in the reference. */
const APPLIES: Record<Leaf['apply'], string> = {
  live: 'live',
  reopen: 'camera reopens',
  camera: 'camera rebuilt',
  model: 'model reloaded',
  mqtt: 'restart (broker)',
  outbox: 'restart (outbox)',
  daemon: 'restart',
};

function rows(tree: SchemaTree): string[] {
  return leaves(tree).map(([key, leaf]) => {
    const def = leaf.docDefault ?? (leaf.sensitive && leaf.default ? '(secret)' : JSON.stringify(leaf.default));
    const env = leaf.env ? ` Env: \`${leaf.env}\`.` : '';
    const recipe = leaf.recipe ? ' Recipe: a recipe may override it.' : '';
    return `| \`${key}\` | ${describeFormat(leaf)} | \`${def}\` | ${APPLIES[leaf.apply]} | ${remotePolicy(leaf)} | ${leaf.doc.replace(/\|/g, '\\|')}${env}${recipe} |`;
  });
}

export function configReference(): string {
  const header = '| key | type | default | a change applies | remote push | meaning |\n| --- | --- | --- | --- | --- | --- |';
  return [
    '"A change applies": live (at once), camera reopens (its source), camera rebuilt, model reloaded',
    '(beside the running one, swapped between batches), or restart (at the next daemon start; a push',
    'answers it in `restartRequired`). "Remote push": allowed (when in `remoteConfig.allow`), signed',
    '(only on a device with `remoteConfig.publicKey`; clearing it back to the default needs no',
    'signature), or never (only the file).',
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
