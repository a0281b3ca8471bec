// The good images collected for a camera (its dataset folder, see dataset.ts), for the Teach
// page: the list with the count and how many are enough (shared/dataset-advice.ts), each image
// (or a small JPEG of it for the grid), and a delete for a bad capture. Names come from the
// folder's listing and are matched against it; no request names a path.
import fs from 'node:fs';
import path from 'node:path';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import cv from '../cv.js';
import { datasetAdvice } from '../shared/dataset-advice.js';
import { isImageFile } from '../shared/images.js';
import type { DatasetCapture } from './dataset.js';

/** Longest side of a grid thumbnail, in pixels. */
const THUMB_SIDE = 160;
/** Most images a listing names (newest first); the count is all of them. */
const MAX_LISTED = 500;
const CONTENT_TYPES: Record<string, string> = { '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.bmp': 'image/bmp', '.webp': 'image/webp', '.tif': 'image/tiff', '.tiff': 'image/tiff' };

const cameraParams = {
  type: 'object', required: ['camera'],
  properties: { camera: { type: 'string', minLength: 1, maxLength: 256 } },
} as const;
const imageParams = {
  type: 'object', required: ['camera', 'name'],
  properties: { camera: cameraParams.properties.camera, name: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$' } },
} as const;

export interface DatasetImage {
  name: string;
  url: string;
  thumb: string;
  bytes: number;
  addedAt: string;
  /** 'archive': an NG an operator marked good; 'camera': recorded or captured. */
  source: 'archive' | 'camera';
}

/** A camera's good images, newest first, and how many there are. */
export async function listImages(dataset: DatasetCapture, cameraId: string): Promise<{ count: number; images: DatasetImage[] }> {
  const dir = dataset.goodDir(cameraId);
  const names = await fs.promises.readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [] as string[];
    throw err;
  });
  const images: DatasetImage[] = [];
  for (const name of names.filter(isImageFile)) {
    const stat = await fs.promises.stat(path.join(dir, name)).catch(() => null);
    if (!stat?.isFile()) continue;
    const url = `/api/dataset/images/${encodeURIComponent(cameraId)}/${encodeURIComponent(name)}`;
    images.push({ name, url, thumb: `${url}?thumb=true`, bytes: stat.size, addedAt: stat.mtime.toISOString(), source: name.startsWith('ng-') ? 'archive' : 'camera' });
  }
  images.sort((a, b) => b.addedAt.localeCompare(a.addedAt) || b.name.localeCompare(a.name));
  return { count: images.length, images: images.slice(0, MAX_LISTED) };
}

export const datasetImageRoutes: FastifyPluginAsync<{ dataset: DatasetCapture }> = async (app, { dataset }) => {
  const refuse = (reply: FastifyReply, status: number, error: string) => reply.code(status).send({ error });
  /** The image file when the camera is known and the name is one of its images; else the answer is sent. */
  const imageFile = async (reply: FastifyReply, camera: string, name: string): Promise<string | null> => {
    if (!dataset.hasCamera(camera)) {
      await refuse(reply, 404, `no enabled camera ${camera}`);
      return null;
    }
    const file = path.join(dataset.goodDir(camera), name);
    const known = isImageFile(name) && (await fs.promises.readdir(path.dirname(file)).catch(() => [] as string[])).includes(name);
    if (!known) await refuse(reply, 404, `camera ${camera} has no collected image ${name}`);
    return known ? file : null;
  };
  const listing = async (camera: string) => {
    const { count, images } = await listImages(dataset, camera);
    const advice = datasetAdvice(count);
    return { cameraId: camera, ...advice, recording: dataset.status().recording[camera] ?? null, images };
  };

  app.get<{ Params: { camera: string } }>('/dataset/images/:camera', { schema: { params: cameraParams } }, async (request, reply) => {
    if (!dataset.hasCamera(request.params.camera)) return refuse(reply, 404, `no enabled camera ${request.params.camera}`);
    return listing(request.params.camera);
  });

  app.get<{ Params: { camera: string; name: string }; Querystring: { thumb?: boolean } }>('/dataset/images/:camera/:name', {
    schema: { params: imageParams, querystring: { type: 'object', properties: { thumb: { type: 'boolean' } }, additionalProperties: false } },
  }, async (request, reply) => {
    const file = await imageFile(reply, request.params.camera, request.params.name);
    if (!file) return reply;
    try {
      if (!request.query.thumb) return reply.type(CONTENT_TYPES[path.extname(file).toLowerCase()] ?? 'application/octet-stream').send(await fs.promises.readFile(file));
      const image = await cv.imreadAsync(file, cv.IMREAD_COLOR);
      const scale = Math.min(1, THUMB_SIDE / Math.max(image.cols, image.rows));
      const small = await image.resizeAsync(Math.max(1, Math.round(image.rows * scale)), Math.max(1, Math.round(image.cols * scale)), 0, 0, cv.INTER_AREA);
      try {
        return reply.type('image/jpeg').send(await cv.imencodeAsync('.jpg', small, [cv.IMWRITE_JPEG_QUALITY, 80]));
      } finally {
        small.release();
        image.release();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return refuse(reply, 404, `${request.params.name} was deleted`);
      return refuse(reply, 422, `${request.params.name} cannot be read as an image: ${(err as Error).message}`);
    }
  });

  app.delete<{ Params: { camera: string; name: string } }>('/dataset/images/:camera/:name', { schema: { params: imageParams } }, async (request, reply) => {
    const file = await imageFile(reply, request.params.camera, request.params.name);
    if (!file) return reply;
    await fs.promises.rm(file, { force: true });
    request.log.info({ camera: request.params.camera, image: request.params.name }, 'collected image deleted');
    return { deleted: request.params.name, ...(await listing(request.params.camera)) };
  });
};
