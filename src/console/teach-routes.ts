// The console's on-device training routes (the Teach page's API; /work/notes/teach-contract.md):
// the status, start, cancel, promote, rollback, and the shadow check's example frames. Reads need
// read access, the rest change access. Every answer but a frame is a TeachStatus or {error}.
import fs from 'node:fs';
import path from 'node:path';
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import type { AuditActor } from '../control/actor.js';
import { TeachRefused, type TeachStatus } from '../shared/teach-status.js';
import type { ConsolePlugin } from './server.js';

/** What the routes ask of the training room (service/training.ts). */
export interface TeachHost {
  status(): TeachStatus;
  start(request: { cameraId?: unknown; recipe?: unknown }, actor: AuditActor): TeachStatus;
  cancel(actor: AuditActor): TeachStatus;
  promote(actor: AuditActor): Promise<TeachStatus>;
  rollback(actor: AuditActor): Promise<TeachStatus>;
  /** Where the shadow check's example JPEGs are. */
  readonly shadowDir: string;
  /** The file of a version promoted here (for other stations: crad-edge deliver), or null. */
  modelFile(sha256: string): string | null;
}

const startBody = {
  type: 'object',
  required: ['cameraId'],
  properties: { cameraId: { type: 'string', minLength: 1, maxLength: 256 }, recipe: { type: ['string', 'null'], maxLength: 256 } },
  additionalProperties: false,
} as const;
const emptyBody = { type: 'object', additionalProperties: false } as const;
const frameParams = {
  type: 'object',
  required: ['name'],
  properties: { name: { type: 'string', pattern: '^[A-Za-z0-9_-]+\\.jpg$' } },
} as const;

const modelParams = {
  type: 'object',
  required: ['file'],
  properties: { file: { type: 'string', pattern: '^[0-9a-f]{64}\\.onnx$' } },
} as const;

const CONSOLE: AuditActor = { kind: 'console' };

async function answer(reply: FastifyReply, work: () => TeachStatus | Promise<TeachStatus>, code = 200): Promise<FastifyReply> {
  try {
    return reply.code(code).send(await work());
  } catch (err) {
    if (err instanceof TeachRefused) return reply.code(err.status).send({ error: err.message });
    return reply.code(500).send({ error: (err as Error).message });
  }
}

export function teachRoutes(host: () => TeachHost | null): FastifyPluginAsync {
  return async (app) => {
    const room = (reply: FastifyReply): TeachHost | null => {
      const teach = host();
      if (!teach) void reply.code(503).send({ error: 'the daemon is still starting' });
      return teach;
    };
    app.get('/teach', async (_request, reply) => {
      const teach = room(reply);
      return teach ? answer(reply, () => teach.status()) : reply;
    });
    app.post<{ Body: { cameraId: string; recipe?: string | null } }>('/teach/start', { schema: { body: startBody } }, async (request, reply) => {
      const teach = room(reply);
      return teach ? answer(reply, () => teach.start(request.body, CONSOLE), 202) : reply;
    });
    for (const action of ['cancel', 'promote', 'rollback'] as const) {
      app.post(`/teach/${action}`, { schema: { body: emptyBody } }, async (_request, reply) => {
        const teach = room(reply);
        return teach ? answer(reply, () => teach[action](CONSOLE)) : reply;
      });
    }
    app.get<{ Params: { name: string } }>('/teach/shadow/:name', { schema: { params: frameParams } }, async (request, reply) => {
      const teach = room(reply);
      if (!teach) return reply;
      try {
        const jpeg = await fs.promises.readFile(path.join(teach.shadowDir, request.params.name));
        return reply.type('image/jpeg').header('cache-control', 'no-store').send(jpeg);
      } catch {
        return reply.code(404).send({ error: 'no such shadow frame (a new shadow check replaces the last one\'s frames)' });
      }
    });
    // A promoted model, to publish to other stations (the fleet's file server, then crad-edge deliver).
    app.get<{ Params: { file: string } }>('/teach/models/:file', { schema: { params: modelParams } }, async (request, reply) => {
      const teach = room(reply);
      if (!teach) return reply;
      const file = teach.modelFile(request.params.file.slice(0, 64));
      if (!file) return reply.code(404).send({ error: 'no model of that sha256 was promoted on this station' });
      return reply.type('application/octet-stream').header('content-disposition', `attachment; filename="${path.basename(file)}"`).send(fs.createReadStream(file));
    });
  };
}

/** The routes as a console plugin under `prefix` (GET: read access; POST: change access). */
export function teachConsolePlugin(host: () => TeachHost | null, prefix = '/api'): ConsolePlugin {
  return {
    prefix,
    plugin: async (app, { auth }) => {
      app.addHook('preHandler', (request, reply) => (request.method === 'GET' || request.method === 'HEAD' ? auth.read(request, reply) : auth.change(request, reply)));
      // A POST without a body is an empty request (the page may send none).
      app.addHook('preValidation', async (request) => {
        if (request.method === 'POST' && (request.body === undefined || request.body === null)) request.body = {};
      });
      await app.register(teachRoutes(host));
    },
  };
}
