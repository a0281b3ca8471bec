// The operator console: an HTTP server inside the daemon (fastify) for health, readiness,
// Prometheus metrics, the live view and the changes an operator makes there (ROI, thresholds,
// counter resets). Every config change is a push through the daemon's one config path. Requests
// are small and bounded; slow clients are dropped (request timeout, connection limit, stalled
// streams); a bad request gets a 4xx with its reason.
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { createSecureContext } from 'node:tls';
import Fastify, { LogController, type FastifyInstance, type FastifyPluginAsync, type FastifyReply, type FastifyRequest } from 'fastify';
import { ConfigError, readKeyFile, redact, type AppConfig } from '../config/load.js';
import type { Roi } from '../capture/frame.js';
import type { FrameInference, InspectionResult } from '../inference/types.js';
import { modelSummary } from '../publish/payloads.js';
import type { Logger } from '../shared/log.js';
import { authConfigProblem, ConsoleAuth, type Access } from './auth.js';
import type { ConsoleHost } from './host.js';
import { LiveView } from './live.js';
import { Metrics } from './metrics.js';
import { RecentFrames, RoiCheckError } from './roi-check.js';

/** Largest request body (config changes are a few hundred bytes). */
const BODY_LIMIT_BYTES = 64 * 1024;
const STATIC_FILES: Record<string, string> = {
  '/': 'index.html',
  '/console.js': 'console.js',
  '/console.css': 'console.css',
  '/common.js': 'common.js',
  '/tools.js': 'tools.js',
  '/teach.html': 'teach.html',
  '/teach.js': 'teach.js',
};
const CONTENT_TYPES: Record<string, string> = { html: 'text/html; charset=utf-8', js: 'text/javascript; charset=utf-8', css: 'text/css; charset=utf-8' };

/** What a plugin mounted on the console (the NG archive, dataset capture) is given. */
export interface ConsolePluginOptions {
  host: ConsoleHost;
  /** preHandlers: `auth.read` for pages and downloads, `auth.change` for anything that changes state. */
  auth: Record<Access, (request: FastifyRequest, reply: FastifyReply) => Promise<void>>;
}

export interface ConsolePlugin {
  prefix: string;
  plugin: FastifyPluginAsync<ConsolePluginOptions>;
}

/**
 * The console's certificate and key (http.tls.*), read and tried now, or null for plain HTTP when
 * neither is set: a file that cannot be read or used stops the start naming its key, never a
 * console that falls back to plain HTTP.
 */
function httpsFiles(tls: AppConfig['http']['tls']): { cert: Buffer; key: Buffer } | null {
  if (tls.cert === '' && tls.key === '') return null;
  const files = { cert: readKeyFile('http.tls.cert', tls.cert), key: readKeyFile('http.tls.key', tls.key) };
  try {
    createSecureContext(files);
  } catch (err) {
    throw new ConfigError(`http.tls.cert / http.tls.key: not a PEM certificate and its private key (${tls.cert}, ${tls.key}): ${(err as Error).message}`);
  }
  return files;
}

export class ConsoleServer {
  readonly live: LiveView;
  readonly metrics: Metrics;
  /** A few recent frames per camera, for checking an ROI before it is applied. */
  private readonly recent = new RecentFrames();
  private readonly app: FastifyInstance;
  private readonly auth: ConsoleAuth;
  private readonly httpConfig: AppConfig['http'];

  /** Throws (naming the key) when the configuration must not be served. */
  constructor(private readonly host: ConsoleHost, private readonly log: Logger, private readonly plugins: ConsolePlugin[] = []) {
    const config = host.config();
    this.httpConfig = config.http;
    const problem = authConfigProblem(this.httpConfig);
    if (problem) throw new ConfigError(`console not started: ${problem}`);
    this.auth = new ConsoleAuth(this.httpConfig);
    this.live = new LiveView({
      fps: this.httpConfig.liveFps,
      maxViewers: this.httpConfig.maxViewers,
      overlayAlpha: () => host.config().overlay.alpha,
      threshold: () => 0.5 + host.config().inference.sensitivity,
      state: (cameraId) => this.liveState(cameraId),
    });
    this.metrics = new Metrics(host);
    const https = httpsFiles(this.httpConfig.tls);
    this.app = Fastify({
      ...(https ? { https } : {}),
      bodyLimit: BODY_LIMIT_BYTES,
      requestTimeout: this.httpConfig.requestTimeoutMs,
      keepAliveTimeout: Math.min(5000, this.httpConfig.requestTimeoutMs),
      forceCloseConnections: true,
      // A field the route does not know is an error, never silently dropped.
      ajv: { customOptions: { removeAdditional: false } },
      logController: new LogController({ disableRequestLogging: true }),
      loggerInstance: log,
    }) as unknown as FastifyInstance;
    this.routes();
  }

  /** Called for every result, with the frame still alive (see PipelineSink.publishResult). */
  observeResult(result: InspectionResult, inspected: FrameInference | undefined, captureToPublishMs: number): void {
    this.metrics.observeResult(result, captureToPublishMs);
    this.live.offer(result, inspected);
    if (this.host.scoreFrames) this.recent.offer(result, inspected);
  }

  observeFailure(cameraId: string): void {
    this.metrics.observeFailure(cameraId);
  }

  async start(): Promise<string> {
    await this.app.ready();
    const address = await this.app.listen({ host: this.httpConfig.host, port: this.httpConfig.port });
    this.app.server.maxConnections = this.httpConfig.maxConnections;
    this.log.info({ address }, 'operator console listening');
    return address;
  }

  async stop(): Promise<void> {
    await this.app.close();
    this.recent.close();
  }

  private routes(): void {
    const app = this.app;
    const guard = (access: Access) => async (request: FastifyRequest, reply: FastifyReply) => {
      if (this.auth.allows(request.headers.authorization, access)) return;
      reply.header('WWW-Authenticate', 'Basic realm="crad-edge", charset="UTF-8"');
      await reply.code(401).send({ error: access === 'change' ? 'changes need the console credentials (http.token or http.username)' : 'the console needs credentials' });
    };
    const auth = { read: guard('read'), change: guard('change') };

    app.removeContentTypeParser('application/json');
    app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
      try {
        done(null, parseJsonBody(body as string));
      } catch (err) {
        done(Object.assign(err as Error, { statusCode: 400 }), undefined);
      }
    });
    // The validator coerces types (query strings need it); a JSON body must carry the right ones.
    app.addHook('preValidation', async (request) => {
      const problem = bodyTypeProblem(request.routeOptions.schema?.body, request.body);
      if (problem) throw Object.assign(new Error(problem), { statusCode: 400 });
    });

    app.setErrorHandler((err: Error & { statusCode?: number }, request, reply) => {
      const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 600 ? err.statusCode : 500;
      if (status >= 500) this.log.error({ err, url: request.url }, 'console request failed');
      void reply.code(status).send({ error: status >= 500 ? 'internal error' : err.message });
    });
    app.setNotFoundHandler((request, reply) => void reply.code(404).send({ error: `no such page: ${request.method} ${request.url.split('?')[0]}` }));

    // Probes carry no secrets: open, so a supervisor needs no token.
    app.get('/healthz', async () => ({ status: 'alive' }));
    app.get('/readyz', async (_request, reply) => {
      const reasons = this.notReady();
      return reply.code(reasons.length === 0 ? 200 : 503).send({ ready: reasons.length === 0, reasons });
    });
    app.get('/metrics', { preHandler: auth.read }, async (_request, reply) => reply.type(this.metrics.contentType).send(await this.metrics.text()));

    for (const [url, file] of Object.entries(STATIC_FILES)) {
      const body = fs.readFileSync(new URL(`./static/${file}`, import.meta.url));
      const type = CONTENT_TYPES[file.split('.').pop()!]!;
      app.get(url, { preHandler: auth.read }, async (_request, reply) => reply.type(type).header('Cache-Control', 'no-cache').send(body));
    }

    const cameraParams = { type: 'object', required: ['camera'], properties: { camera: { type: 'string', maxLength: 64 } } } as const;
    app.get('/api/cameras', { preHandler: auth.read }, async (request) => ({
      revision: this.host.revision(),
      // The page disables its controls (and says so) when this viewer may only read.
      access: this.auth.allows(request.headers.authorization, 'change') ? 'change' : 'read',
      model: modelSummary(this.host.model()),
      cameras: this.host.cameras().map((c) => ({ id: c.id, state: c.status?.state ?? null })),
    }));
    app.get<{ Params: { camera: string } }>('/api/cameras/:camera', { preHandler: auth.read, schema: { params: cameraParams } }, async (request) => this.cameraState(request.params.camera));
    app.get<{ Params: { camera: string }; Querystring: { overlay?: boolean } }>('/api/cameras/:camera/live', {
      preHandler: auth.read,
      schema: { params: cameraParams, querystring: { type: 'object', properties: { overlay: { type: 'boolean' } }, additionalProperties: false } },
    }, async (request, reply) => {
      this.knownCamera(request.params.camera);
      reply.hijack();
      if (!this.live.stream(request.params.camera, request.query.overlay === true, reply.raw)) {
        reply.raw.writeHead(503, { 'Content-Type': 'application/json' }).end(JSON.stringify({ error: `camera ${request.params.camera} has its most viewers (http.maxViewers ${this.httpConfig.maxViewers})` }));
      }
    });

    app.get('/api/config', { preHandler: auth.read }, async () => ({ revision: this.host.revision(), config: redact(this.host.config()) }));
    app.post<{ Body: { baseRevision: number; changes: Record<string, unknown> } }>('/api/config', {
      preHandler: auth.change,
      schema: {
        body: {
          type: 'object', required: ['baseRevision', 'changes'], additionalProperties: false,
          properties: { baseRevision: { type: 'integer', minimum: 0 }, changes: { type: 'object' } },
        },
      },
    }, async (request, reply) => this.push(reply, request.body.baseRevision, request.body.changes));
    // An ROI drawn on the page: the running camera list with this camera's roi replaced, pushed
    // whole ("cameras" is one key), so the page never handles the other cameras' (redacted) fields.
    app.post<{ Params: { camera: string }; Body: { baseRevision: number; roi: unknown } }>('/api/cameras/:camera/roi', {
      preHandler: auth.change,
      schema: {
        params: cameraParams,
        body: {
          type: 'object', required: ['baseRevision', 'roi'], additionalProperties: false,
          properties: { baseRevision: { type: 'integer', minimum: 0 }, roi: { type: ['object', 'null'] } },
        },
      },
    }, async (request, reply) => {
      const id = this.knownCamera(request.params.camera);
      const cameras = this.host.config().cameras.map((c) => (c.id === id ? { ...c, roi: request.body.roi } : c));
      return this.push(reply, request.body.baseRevision, { cameras });
    });

    // What an ROI would do before it is applied: the recent frames scored with it (see roi-check.ts).
    app.post<{ Params: { camera: string }; Body: { roi: Roi | null } }>('/api/cameras/:camera/roi/check', {
      preHandler: auth.change,
      schema: { params: cameraParams, body: { type: 'object', required: ['roi'], additionalProperties: false, properties: { roi: ROI_BODY } } },
    }, async (request, reply) => {
      const id = this.knownCamera(request.params.camera);
      const score = this.host.scoreFrames;
      if (!score) return reply.code(501).send({ error: 'this daemon cannot score frames for an ROI check' });
      try {
        return await this.recent.check(id, request.body.roi, score);
      } catch (err) {
        if (err instanceof RoiCheckError) return reply.code(err.statusCode).send({ error: err.message });
        throw err;
      }
    });

    app.post<{ Params: { camera: string }; Body: { recipe: string | null } }>('/api/cameras/:camera/recipe', {
      preHandler: auth.change,
      schema: {
        params: cameraParams,
        body: { type: 'object', required: ['recipe'], additionalProperties: false, properties: { recipe: { type: ['string', 'null'], maxLength: 256 } } },
      },
    }, async (request, reply) => {
      const camera = this.knownCamera(request.params.camera);
      const answer = this.host.selectRecipe({ transaction: `console-${randomUUID()}`, camera, recipe: request.body.recipe });
      return reply.code(answer.status === 'ok' ? 200 : 400).send(answer);
    });

    app.get('/api/counters', { preHandler: auth.read }, async () => this.host.counters());
    app.post<{ Body: { camera?: string } | undefined }>('/api/counters/reset', {
      preHandler: auth.change,
      schema: { body: { type: ['object', 'null'], properties: { camera: { type: 'string', maxLength: 64 } }, additionalProperties: false } },
    }, async (request) => {
      const cameras = request.body?.camera !== undefined ? [this.knownCamera(request.body.camera)] : this.host.cameras().map((c) => c.id);
      this.host.resetCounters(cameras);
      return { status: 'ok', cameras };
    });

    for (const { prefix, plugin } of this.plugins) void app.register(plugin, { prefix, host: this.host, auth });
  }

  /** The console is one more sender of config pushes: same checks, record, revision and answer. */
  private async push(reply: FastifyReply, baseRevision: number, changes: Record<string, unknown>): Promise<FastifyReply> {
    const push = { transaction: `console-${randomUUID()}`, baseRevision, changes };
    const answer = await this.host.configPush(Buffer.from(JSON.stringify(push)));
    return reply.code(answer.status === 'ok' ? 200 : 400).send(answer);
  }

  /** The camera id when it is one of the running cameras; a 404 otherwise. */
  private knownCamera(id: string): string {
    if (this.host.cameras().some((c) => c.id === id)) return id;
    throw Object.assign(new Error(`no running camera ${JSON.stringify(id)}`), { statusCode: 404 });
  }

  private cameraState(id: string): object {
    this.knownCamera(id);
    const config = this.host.config();
    const camera = this.host.cameras().find((c) => c.id === id)!;
    const cameraConfig = config.cameras.find((c) => c.id === id)!;
    const model = this.host.model();
    return {
      id,
      revision: this.host.revision(),
      state: camera.status?.state ?? null,
      error: camera.status?.error ?? null,
      frameSize: camera.frameSize,
      roi: cameraConfig.roi,
      trigger: cameraConfig.trigger,
      last: this.live.lastResult(id),
      fps: this.live.fps(id),
      counters: this.host.counters()[id] ?? null,
      scores: this.live.recentScores(id),
      recipes: { names: this.host.recipes().names, active: this.host.recipes().active[id] ?? null },
      inference: { sensitivity: config.inference.sensitivity, imageThreshold: config.inference.imageThreshold },
      model: { ...modelSummary(model), calibration: model.calibration },
    };
  }

  /** What each live viewer is told every second: is what it shows live, and why not. */
  private liveState(id: string): object {
    const camera = this.host.cameras().find((c) => c.id === id);
    const cameraConfig = this.host.config().cameras.find((c) => c.id === id);
    const model = this.host.model();
    return {
      time: new Date().toISOString(),
      revision: this.host.revision(),
      camera: camera ? { state: camera.status?.state ?? null, error: camera.status?.error ?? null, trigger: cameraConfig?.trigger ?? null } : null,
      broker: { connected: this.host.publisherStats().connected },
      model: { name: model.name, version: model.version, calibrated: model.calibration !== null },
      fps: this.live.fps(id),
      counters: this.host.counters()[id] ?? null,
      ready: this.notReady(),
      alarmNgStreak: this.host.config().http.alarmNgStreak,
    };
  }

  /** Why the daemon is not ready to inspect, empty when it is. */
  private notReady(): string[] {
    const reasons: string[] = [];
    const inspection = this.host.inspection?.();
    if (inspection && !inspection.ready) reasons.push(`inspection stopped: ${inspection.reason}`);
    if (!this.host.publisherStats().connected) reasons.push('the MQTT broker is not connected');
    for (const camera of this.host.cameras()) {
      const state = camera.status?.state ?? 'no status yet';
      if (state !== 'online') reasons.push(`camera ${camera.id} is ${state}${camera.status?.error ? `: ${camera.status.error}` : ''}`);
    }
    return reasons;
  }
}

/** An ROI in a request body: null (the whole frame) or a rectangle in frame pixels. */
const ROI_BODY = {
  type: ['object', 'null'], required: ['x', 'y', 'width', 'height'], additionalProperties: false,
  properties: { x: { type: 'integer', minimum: 0 }, y: { type: 'integer', minimum: 0 }, width: { type: 'integer', minimum: 1 }, height: { type: 'integer', minimum: 1 } },
} as const;

/** Keys that would reach an object's prototype when a parsed body is copied. */
const POISON_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/** A JSON body, or an error that says what is wrong with it (not just "not valid JSON"). */
export function parseJsonBody(text: string): unknown {
  if (text.trim() === '') throw new Error("Body cannot be empty when content-type is set to 'application/json'");
  let value: unknown;
  try {
    value = JSON.parse(text, function (this: unknown, key: string, v: unknown) {
      if (POISON_KEYS.has(key)) throw new BodyError(`key "${key}" is not allowed in a request body`);
      if (typeof v === 'number' && !Number.isFinite(v)) throw new BodyError(`the number at "${key}" is out of range (a JSON number must fit a double)`);
      return v;
    });
  } catch (err) {
    if (err instanceof BodyError) throw new Error(`Body is refused: ${err.message}`);
    throw new Error(`Body is not valid JSON: ${(err as Error).message}`);
  }
  return value;
}

class BodyError extends Error {}

const JSON_TYPES: Record<string, (v: unknown) => boolean> = {
  integer: (v) => Number.isInteger(v),
  number: (v) => typeof v === 'number',
  string: (v) => typeof v === 'string',
  boolean: (v) => typeof v === 'boolean',
  object: (v) => typeof v === 'object' && v !== null && !Array.isArray(v),
  array: (v) => Array.isArray(v),
  null: (v) => v === null,
};

/** A body field whose JSON type is not its schema's (which the validator would coerce), or null. */
function bodyTypeProblem(schema: unknown, body: unknown): string | null {
  const properties = (schema as { properties?: Record<string, { type?: string | string[] }> } | undefined)?.properties;
  if (!properties || typeof body !== 'object' || body === null) return null;
  for (const [name, value] of Object.entries(body)) {
    const type = properties[name]?.type;
    if (type === undefined) continue;
    const types = Array.isArray(type) ? type : [type];
    if (!types.some((t) => JSON_TYPES[t]?.(value))) {
      const got = value === null ? 'null' : Array.isArray(value) ? 'an array' : `a ${typeof value}`;
      return `body/${name} must be ${types.join(' or ')}, got ${got} (${JSON.stringify(value)?.slice(0, 40)})`;
    }
  }
  return null;
}
