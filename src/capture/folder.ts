// Folder of still images, read in name order: a stand-in camera for demos, tests and replaying
// recorded parts. An image that does not decode is skipped, counted and logged — never fatal.
import fs from 'node:fs/promises';
import path from 'node:path';
import cv, { type Mat } from '../cv.js';
import { IMAGE_EXTENSIONS, isImageFile } from '../shared/images.js';
import type { Logger } from '../shared/log.js';
import type { CameraSource } from './source.js';

export class FolderSource implements CameraSource {
  readonly live = false;
  readonly nativeFps = 0;
  readonly description: string;
  skipped = 0;
  private files: string[] = [];
  private next = 0;

  constructor(private readonly dir: string, private readonly loop: boolean, private readonly log: Logger) {
    this.description = `folder ${dir}`;
  }

  async open(): Promise<void> {
    this.files = await this.list();
    this.next = 0;
  }

  private async list(): Promise<string[]> {
    let names: string[];
    try {
      names = await fs.readdir(this.dir);
    } catch (err) {
      throw new Error(`cannot open ${this.description}: ${(err as Error).message}`);
    }
    const images = names
      .filter(isImageFile)
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    if (images.length === 0) {
      throw new Error(`cannot open ${this.description}: no image files (${IMAGE_EXTENSIONS.join(' ')})`);
    }
    return images.map((name) => path.join(this.dir, name));
  }

  async read(): Promise<Mat | null> {
    // Give up after a full pass' worth of undecodable images in a row, so a folder of broken files
    // is a failure (camera offline) instead of a busy loop.
    let failedInARow = 0;
    for (;;) {
      if (this.next >= this.files.length) {
        if (!this.loop) return null;
        // Re-list on each pass: images added to or removed from the folder are picked up.
        this.files = await this.list();
        this.next = 0;
      }
      if (failedInARow >= this.files.length) {
        throw new Error(`${this.description}: none of ${this.files.length} image files decodes`);
      }
      const file = this.files[this.next++]!;
      try {
        const mat = await cv.imreadAsync(file, cv.IMREAD_COLOR);
        if (!mat.empty) return mat;
        mat.release();
        this.skip(file, 'decoded to an empty image');
      } catch (thrown) {
        this.skip(file, String(thrown));
      }
      failedInARow++;
    }
  }

  private skip(file: string, why: string): void {
    this.skipped++;
    this.log.warn({ file, reason: why, skipped: this.skipped }, 'image does not decode; skipped');
  }

  close(): void {
    this.files = [];
    this.next = 0;
  }
}
