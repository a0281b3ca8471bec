// Image files the daemon reads (the folder camera, `crad-edge infer`): one list, so that a
// customer's .bmp or .tif is read everywhere or nowhere. The trainer keeps an identical tuple in
// training/crad/data.py (a trainer test compares the two); OpenCV reads every one of them.
import path from 'node:path';

export const IMAGE_EXTENSIONS: readonly string[] = ['.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.pgm', '.ppm', '.pnm'];

const extensions = new Set(IMAGE_EXTENSIONS);

/** True when the file name has one of IMAGE_EXTENSIONS (any case). */
export function isImageFile(name: string): boolean {
  return extensions.has(path.extname(name).toLowerCase());
}
