// Where the installed project lives, found the same way from src/ (tsx) and dist/src/ (built).
import fs from 'node:fs';
import path from 'node:path';

function findRoot(start: string): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    const manifest = path.join(dir, 'package.json');
    if (fs.existsSync(manifest) && (JSON.parse(fs.readFileSync(manifest, 'utf8')) as { name?: string }).name === 'crad-edge') {
      return dir;
    }
    if (path.dirname(dir) === dir) throw new Error(`cannot find crad-edge's package.json above ${start}`);
  }
}

export const projectRoot = findRoot(import.meta.dirname);
export const version = (JSON.parse(fs.readFileSync(path.join(projectRoot, 'package.json'), 'utf8')) as { version: string }).version;
