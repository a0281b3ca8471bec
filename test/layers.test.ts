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

interface Import {
  from: string;
  to: string;
  /** `import type` / `export type`, or a list of `type X` names only: erased at compile time. */
  typeOnly: boolean;
}

/** Static imports and `export ... from` between files of src/ (packages and node: are not edges). */
function importsOf(file: string): Import[] {
  const text = fs.readFileSync(file, 'utf8');
  const imports: Import[] = [];
  for (const match of text.matchAll(/^\s*(?:import|export)\b(\s+type\b)?(?:([^'";]*?)\bfrom\s+|\s+)'(\.[^']+)'/gm)) {
    const names = (match[2] ?? '').match(/^\s*\{([^}]*)\}\s*$/)?.[1]?.split(',').map((name) => name.trim()).filter(Boolean);
    const typeOnly = match[1] !== undefined || (names !== undefined && names.length > 0 && names.every((name) => name.startsWith('type ')));
    imports.push({ from: file, to: path.resolve(path.dirname(file), match[3]!.replace(/\.js$/, '.ts')), typeOnly });
  }
  return imports;
}

test('no import in src/ runs back up the layers', () => {
  const upward: string[] = [];
  const files = sourceFiles(src);
  assert.ok(files.length > 30, 'the source tree was found');
  for (const file of files) {
    for (const { to } of importsOf(file)) {
      if (layerOf(to) > layerOf(file)) upward.push(`${path.relative(src, file)} -> ${path.relative(src, to)}`);
    }
  }
  assert.deepEqual(upward, [], `imports that run back up the layers:\n${upward.join('\n')}`);
});

/**
 * Cycles the merge still has to break, each as `a.ts -> b.ts -> a.ts`. Keep it empty: a cycle
 * means a module can be read half-initialised, and the two files belong in one room or apart.
 */
const KNOWN_CYCLES: string[] = [];

/** Every cycle once, as the strongly connected components (Tarjan) of the import graph. */
function cyclesOf(graph: Map<string, string[]>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (node: string): void => {
    index.set(node, index.size);
    low.set(node, index.get(node)!);
    stack.push(node);
    onStack.add(node);
    for (const next of graph.get(node) ?? []) {
      if (!index.has(next)) {
        visit(next);
        low.set(node, Math.min(low.get(node)!, low.get(next)!));
      } else if (onStack.has(next)) {
        low.set(node, Math.min(low.get(node)!, index.get(next)!));
      }
    }
    if (low.get(node) !== index.get(node)) return;
    const component: string[] = [];
    let member: string;
    do {
      member = stack.pop()!;
      onStack.delete(member);
      component.push(member);
    } while (member !== node);
    if (component.length > 1 || (graph.get(node) ?? []).includes(node)) cycles.push(component.reverse());
  }
  for (const node of graph.keys()) if (!index.has(node)) visit(node);
  return cycles;
}

/** One path round a strongly connected component, to name in the failure. */
function pathRound(component: string[], graph: Map<string, string[]>): string {
  const members = new Set(component);
  const start = component[0]!;
  const seen = new Map<string, string>();
  const queue = [start];
  while (queue.length > 0) {
    const node = queue.shift()!;
    for (const next of graph.get(node) ?? []) {
      if (!members.has(next)) continue;
      if (next === start) {
        const route = [start];
        for (let back: string | undefined = node; back !== undefined && back !== start; back = seen.get(back)) route.splice(1, 0, back);
        return [...route, start].map((file) => path.relative(src, file)).join(' -> ');
      }
      if (!seen.has(next)) {
        seen.set(next, node);
        queue.push(next);
      }
    }
  }
  return component.map((file) => path.relative(src, file)).join(' -> ');
}

// Type-only imports are left out: the compiler erases them, so they cannot make a module run
// before its imports are done. Every other static import and re-export counts.
test('no runtime import cycle in src/', () => {
  const files = sourceFiles(src);
  const edges = (file: string) => importsOf(file).filter((edge) => !edge.typeOnly).map((edge) => edge.to);
  const graph = new Map(files.map((file) => [file, [...new Set(edges(file))]]));
  const cycles = cyclesOf(graph).map((component) => pathRound(component, graph));
  assert.deepEqual(cycles.filter((cycle) => !KNOWN_CYCLES.includes(cycle)), [], `import cycles in src/:\n${cycles.join('\n')}`);
});
