// What is running, for the device status: the package version and, from a checkout, the git
// commit. Read from the files (no git process: an installed device has no git, and a status must
// not wait on one).
import fs from 'node:fs';
import path from 'node:path';
import { projectRoot, version } from '../paths.js';

export interface BuildInfo {
  version: string;
  /** null in an installed tree (no .git) or when the checkout cannot be read. */
  commit: string | null;
}

export function buildInfo(root = projectRoot): BuildInfo {
  return { version, commit: gitCommit(root) };
}

const SHA = /^[0-9a-f]{40}([0-9a-f]{24})?$/;

/** The commit HEAD names in the checkout at `root`, following a worktree's .git file. */
export function gitCommit(root: string): string | null {
  try {
    const gitDir = resolveGitDir(path.join(root, '.git'));
    if (!gitDir) return null;
    const head = fs.readFileSync(path.join(gitDir, 'HEAD'), 'utf8').trim();
    if (SHA.test(head)) return head; // detached
    const ref = /^ref: (refs\/\S+)$/.exec(head)?.[1];
    if (!ref) return null;
    // A worktree keeps its HEAD; branches live in the common dir (commondir names it).
    const commonDir = readCommonDir(gitDir);
    for (const dir of new Set([gitDir, commonDir])) {
      const loose = readIfExists(path.join(dir, ref))?.trim();
      if (loose && SHA.test(loose)) return loose;
    }
    return packedRef(readIfExists(path.join(commonDir, 'packed-refs')) ?? '', ref);
  } catch {
    return null;
  }
}

/** `.git` is the git dir in a plain checkout, a file "gitdir: <path>" in a worktree or submodule. */
function resolveGitDir(dotGit: string): string | null {
  const stat = fs.statSync(dotGit, { throwIfNoEntry: false });
  if (!stat) return null;
  if (stat.isDirectory()) return dotGit;
  const target = /^gitdir: (.+)$/m.exec(fs.readFileSync(dotGit, 'utf8'))?.[1]?.trim();
  return target ? path.resolve(path.dirname(dotGit), target) : null;
}

function readCommonDir(gitDir: string): string {
  const common = readIfExists(path.join(gitDir, 'commondir'))?.trim();
  return common ? path.resolve(gitDir, common) : gitDir;
}

function packedRef(packed: string, ref: string): string | null {
  for (const line of packed.split('\n')) {
    const [sha, name] = line.trim().split(' ');
    if (name === ref && sha && SHA.test(sha)) return sha;
  }
  return null;
}

function readIfExists(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}
