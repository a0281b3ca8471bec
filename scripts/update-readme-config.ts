// Regenerates the configuration reference (docs/configuration.md) from the convict schema (npm run docs:config).
import fs from 'node:fs';
import path from 'node:path';
import { configReference } from '../src/cli/config-docs.js';

const readme = path.resolve(import.meta.dirname, '../docs/configuration.md');
const text = fs.readFileSync(readme, 'utf8');
const start = '<!-- config-reference:start -->';
const end = '<!-- config-reference:end -->';
const from = text.indexOf(start);
const to = text.indexOf(end);
if (from < 0 || to < from) throw new Error(`docs/configuration.md lacks the ${start} / ${end} markers`);
fs.writeFileSync(readme, `${text.slice(0, from + start.length)}\n${configReference()}\n${text.slice(to)}`);
console.log('docs/configuration.md: configuration reference updated');
