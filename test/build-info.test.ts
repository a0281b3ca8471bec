// The commit the device status reports, read from the files of real git checkouts (a plain
// repository, packed refs, a detached HEAD, a worktree whose .git is a file) and none for a tree
// without .git (an installed package).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { buildInfo, gitCommit } from '../src/service/build-info.js';
import { version } from '../src/paths.js';

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', ['-c', 'user.name=test', '-c', 'user.email=test@example.com', '-c', 'init.defaultBranch=main', ...args], {
    cwd, encoding: 'utf8', env: { ...process.env, GIT_CONFIG_GLOBAL: '/dev/null', GIT_CONFIG_NOSYSTEM: '1' },
  }).trim();
}

test('gitCommit follows HEAD through loose refs, packed refs, a detached HEAD and a worktree', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'crad-build-info-'));
  try {
    const repo = path.join(dir, 'repo');
    fs.mkdirSync(repo);
    git(repo, 'init', '-q');
    git(repo, 'commit', '-q', '--allow-empty', '-m', 'first');
    assert.equal(gitCommit(repo), git(repo, 'rev-parse', 'HEAD'), 'loose ref');

    git(repo, 'commit', '-q', '--allow-empty', '-m', 'second');
    git(repo, 'pack-refs', '--all');
    assert.ok(!fs.existsSync(path.join(repo, '.git/refs/heads/main')), 'the branch is only in packed-refs now');
    assert.equal(gitCommit(repo), git(repo, 'rev-parse', 'HEAD'), 'packed ref');

    const worktree = path.join(dir, 'worktree');
    git(repo, 'worktree', 'add', '-q', '-b', 'side', worktree, 'HEAD~1');
    git(worktree, 'commit', '-q', '--allow-empty', '-m', 'on the side');
    assert.ok(fs.statSync(path.join(worktree, '.git')).isFile(), 'a worktree has a .git file');
    assert.equal(gitCommit(worktree), git(worktree, 'rev-parse', 'HEAD'), 'worktree branch');
    assert.notEqual(gitCommit(worktree), gitCommit(repo));

    git(repo, 'checkout', '-q', '--detach', 'HEAD~1');
    assert.equal(gitCommit(repo), git(repo, 'rev-parse', 'HEAD'), 'detached HEAD');

    const installed = path.join(dir, 'installed');
    fs.mkdirSync(installed);
    assert.equal(gitCommit(installed), null);
    assert.deepEqual(buildInfo(installed), { version, commit: null });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
