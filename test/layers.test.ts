// The layout shows the data flow, and imports follow it: every import in src/ points to the same
// layer or one below. A module that needs something from above is in the wrong room.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

const src = path.resolve(import.meta.dirname, '../src');

/** Bottom to top. Files directly in src/ are named by their file name. */
const LAYERS: string[][] = [
  ['shared', 'cv.ts', 'paths.ts'],
  ['config'],
  ['capture'],
  ['inference'],
  ['publish'],
  ['control'],
  ['pipeline.ts', 'pipeline-types.ts', 'console', 'sparkplug'],
  ['service'],
  ['cli'],
  ['main.ts'],
];

function layerOf(file: string): number {
  const top = path.relative(src, file).split(path.sep)[0]!;
  const index = LAYERS.findIndex((names) => names.includes(top));
  assert.ok(index >= 0, `${path.relative(src, file)}: src/${top} has no place in the layer list of test/layers.test.ts`);
  return index;
}

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(full);
    return entry.name.endsWith('.ts') ? [full] : [];
  });
}

test('no import in src/ runs back up the layers', () => {
  const upward: string[] = [];
  const files = sourceFiles(src);
  assert.ok(files.length > 30, 'the source tree was found');
  for (const file of files) {
    const text = fs.readFileSync(file, 'utf8');
    for (const match of text.matchAll(/^\s*(?:import|export)\b[^'";]*?from\s+'(\.[^']+)'/gm)) {
      const target = path.resolve(path.dirname(file), match[1]!.replace(/\.js$/, '.ts'));
      if (layerOf(target) > layerOf(file)) upward.push(`${path.relative(src, file)} -> ${path.relative(src, target)}`);
    }
  }
  assert.deepEqual(upward, [], `imports that run back up the layers:\n${upward.join('\n')}`);
});
