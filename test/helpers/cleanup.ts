// What a test process makes outside the repo goes when that process goes: temp dirs and child
// processes (brokers, fake cameras, daemons). Registered here instead of after() hooks, so a
// failed assertion, a crashed test or node --test's --test-force-exit leaves nothing behind.
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const dirs = new Set<string>();
const children = new Set<ChildProcess>();

function cleanUp(): void {
  // 'exit' handlers must be synchronous: SIGKILL and rmSync are.
  for (const child of children) child.kill('SIGKILL');
  children.clear();
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  dirs.clear();
}

process.on('exit', cleanUp);
// A runner or a person interrupting the run: clean up, then die of the same signal.
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => {
    cleanUp();
    process.kill(process.pid, signal);
  });
}

/** Remove this path (recursively) when this process exits. */
export function removeOnExit(dir: string): string {
  dirs.add(dir);
  return dir;
}

/** A fresh directory os.tmpdir()/crad-<prefix>-XXXXXX, removed when this process exits. */
export function tempDir(prefix: string): string {
  return removeOnExit(fs.mkdtempSync(path.join(os.tmpdir(), `crad-${prefix}-`)));
}

/** Kill the child with SIGKILL if it is still running when this process exits. */
export function killOnExit<T extends ChildProcess>(child: T): T {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}
