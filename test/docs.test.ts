// The documentation a newcomer reads: a README of one page (under 300 lines) that points to a page
// per reader in docs/, and no link in them that leads nowhere.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

const repo = path.resolve(import.meta.dirname, '..');
const pages = ['README.md', ...fs.readdirSync(path.join(repo, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

test('the README is one page: under 300 lines, with a page per reader in docs/', () => {
  const readme = fs.readFileSync(path.join(repo, 'README.md'), 'utf8');
  const lines = readme.split('\n').length;
  assert.ok(lines < 300, `README.md has ${lines} lines`);
  for (const page of ['docs/operators.md', 'docs/triggers.md', 'docs/plc-scada.md', 'docs/quality-engineers.md', 'docs/it.md', 'docs/configuration.md', 'docs/performance.md']) {
    assert.ok(readme.includes(`](${page})`), `the README links ${page}`);
  }
});

test('every relative link in the README and docs/ leads to a file that exists', () => {
  const broken: string[] = [];
  for (const page of pages) {
    const text = fs.readFileSync(path.join(repo, page), 'utf8');
    for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      if (/^(https?:|mailto:|#)/.test(target!)) continue;
      const file = path.resolve(path.dirname(path.join(repo, page)), target!.split('#')[0]!);
      if (!fs.existsSync(file)) broken.push(`${page}: ${target}`);
    }
  }
  assert.deepEqual(broken, []);
});
