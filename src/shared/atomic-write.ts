// Replacing a file so that a power cut leaves the old or the new content, never half of either,
// and flushing a directory so that a rename or a new file in it is itself durable.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/**
 * Replace `file` with `data`: a temp file in the same directory (so the rename stays on one file
 * system), fsync it, rename it over `file`, fsync the directory. The temp file is removed when any
 * step fails. `mode` is for a newly created file (default 0600: it may hold secrets; the umask
 * still applies). The directory must exist.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o600): void {
  const temp = path.join(path.dirname(path.resolve(file)), `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(6).toString('hex')}.tmp`);
  let fd: number | null = null;
  try {
    fd = fs.openSync(temp, 'wx', mode);
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = null;
    fs.renameSync(temp, file);
  } catch (err) {
    if (fd !== null) fs.closeSync(fd);
    fs.rmSync(temp, { force: true });
    throw err;
  }
  syncDirectoryOf(file);
}

/**
 * writeFileAtomic on libuv's thread pool: for a file rewritten while frames flow (a periodic save),
 * whose fsyncs would otherwise hold the main thread for milliseconds each time. Callers keep one
 * write of a file in flight at a time: the last rename wins.
 */
export async function writeFileAtomicAsync(file: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const temp = path.join(path.dirname(path.resolve(file)), `.${path.basename(file)}.${process.pid}.${crypto.randomBytes(6).toString('hex')}.tmp`);
  let handle: fs.promises.FileHandle | null = null;
  try {
    handle = await fs.promises.open(temp, 'wx', mode);
    await handle.writeFile(data);
    await handle.sync();
    await handle.close();
    handle = null;
    await fs.promises.rename(temp, file);
  } catch (err) {
    await handle?.close().catch(() => undefined);
    await fs.promises.rm(temp, { force: true });
    throw err;
  }
  const dir = await fs.promises.open(path.dirname(path.resolve(file)), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

/** fsync the directory holding `file`, so that its entry (created, renamed) survives a power cut. */
export function syncDirectoryOf(file: string): void {
  const fd = fs.openSync(path.dirname(path.resolve(file)), 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
