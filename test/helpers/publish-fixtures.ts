// Shared pieces of the publish tests: a config pointing at a test broker, Result objects as the
// inference stage makes them, and a real MQTT subscriber that records what arrives.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import mqtt, { type IPublishPacket, type MqttClient } from 'mqtt';
import { loadConfig, type AppConfig } from '../../src/config/load.js';
import { deviceCommands, type DeviceCommandHandlers } from '../../src/control/commands.js';
import { CommandGroup, CommandRouter } from '../../src/control/router.js';
import type { ModelInfo, Result } from '../../src/inference/types.js';
import type { Publisher } from '../../src/publish/index.js';
import type { Logger } from '../../src/shared/log.js';

// ajv-formats is CommonJS with a default export; under NodeNext the callable is on .default.
const addFormats = addFormatsModule as unknown as typeof addFormatsModule.default;

export const DEVICE = 'press7';
export const PREFIX = `acme/plant1/${DEVICE}`;

/** A validated AppConfig for a broker URL and outbox file, with test-sized timings. */
export function testConfig(url: string, outboxPath: string, overrides: Record<string, any> = {}): AppConfig {
  const base = {
    device: { id: DEVICE },
    cameras: [
      { id: 'cam1', source: 'folder', path: os.tmpdir(), trigger: 'mqtt' },
      { id: 'cam2', source: 'folder', path: os.tmpdir() },
    ],
    mqtt: { url, topicPrefix: 'acme/plant1', reconnectMinMs: 100, reconnectMaxMs: 400, connectTimeoutMs: 2000, keepaliveSec: 5 },
    outbox: { path: outboxPath },
    service: { shutdownTimeoutMs: 2000 },
  };
  return loadConfig(undefined, deepMerge(base, overrides));
}

function deepMerge(a: Record<string, any>, b: Record<string, any>): Record<string, any> {
  const out: Record<string, any> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && a[k] && typeof a[k] === 'object' ? deepMerge(a[k], v) : v;
  }
  return out;
}

export const MODEL: ModelInfo = {
  path: '/opt/models/crad-s.onnx',
  hash: 'a'.repeat(64),
  name: 'crad-s-bottle',
  variant: 'crad-s',
  backbone: 'efficientnet-b4 imagenet',
  version: '2025.05.1',
  input: { form: 'float32-rgb-nchw', height: 224, width: 224, color: 'RGB', range: [0, 1], resize: 'opencv-area' },
  classes: ['bottle'],
  calibration: { image: { threshold: 1.5, min: 0.2, max: 3.1 }, pixel: { threshold: 1.2, min: 0, max: 4 } },
  training: null,
  executionProvider: 'cpu',
};

/** A fake JPEG: SOI marker, a body that identifies it, EOI. The publisher passes bytes through. */
export function jpeg(tag: string): Buffer {
  return Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0]), Buffer.from(tag), Buffer.from([0xff, 0xd9])]);
}

export function makeResult(
  camera: string,
  sequence: number,
  options: { crops?: number; overlay?: boolean; triggerId?: string; ageMs?: number } = {},
): Result {
  const ageMs = options.ageMs ?? 0;
  const crops = options.crops ?? 0;
  const regions = Array.from({ length: crops }, (_, i) => ({
    x: 10 + i * 50, y: 20, width: 40, height: 30, area: 900, peak: 2.5 + i, peakNormalized: 0.8,
  }));
  return {
    frame: {
      cameraId: camera,
      sequence,
      capturedAt: new Date(Date.now() - ageMs).toISOString(),
      capturedMono: performance.now() - ageMs,
      ...(options.triggerId !== undefined ? { triggerId: options.triggerId } : {}),
      roi: null,
    },
    model: MODEL,
    raw: 1.7 + sequence / 1000,
    normalized: 0.57,
    verdict: crops > 0 ? 'NG' : 'OK',
    calibrated: true,
    regions,
    crops: Array.from({ length: crops }, (_, i) => jpeg(`${camera}-${sequence}-crop${i}`)),
    overlay: options.overlay ? jpeg(`${camera}-${sequence}-overlay`) : null,
    latency: { queueMs: 1.234, preprocessMs: 2.5, inferenceMs: 11.25, postprocessMs: 0.75, batchSize: 1 },
  };
}

export interface Received {
  topic: string;
  payload: Buffer;
  packet: IPublishPacket;
  json?: any;
}

/** A real subscriber (MQTT 5 or 3.1.1) on everything under the device prefix. */
export class Subscriber {
  readonly messages: Received[] = [];
  private constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload, packet) => {
      const received: Received = { topic, payload, packet };
      try {
        received.json = JSON.parse(payload.toString('utf8'));
      } catch {
        // binary payload (MQTT 5 crops/overlays)
      }
      this.messages.push(received);
    });
  }

  /** `session` names a persistent session (clean: false) that the broker keeps while we are away. */
  static async connect(url: string, protocolVersion: 4 | 5, topic = `${PREFIX}/#`, session?: string): Promise<Subscriber> {
    const client = await mqtt.connectAsync(url, {
      protocolVersion,
      reconnectPeriod: 200,
      clientId: session ?? `sub-${protocolVersion}-${Math.random().toString(16).slice(2)}`,
      clean: session === undefined,
      ...(session !== undefined && protocolVersion === 5 ? { properties: { sessionExpiryInterval: 3600 } } : {}),
    });
    const subscriber = new Subscriber(client);
    await client.subscribeAsync(topic, { qos: 1 });
    return subscriber;
  }

  on(topic: string): Received[] {
    return this.messages.filter((m) => m.topic === topic);
  }

  /** Wait until `predicate` holds for the messages so far (polling), or fail naming `what`. */
  async waitFor(what: string, predicate: (messages: Received[]) => boolean, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate(this.messages)) {
      if (Date.now() > deadline) {
        const topics = this.messages.map((m) => m.topic).join('\n  ');
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; received:\n  ${topics}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async close(): Promise<void> {
    await this.client.endAsync(true);
  }
}

// The publish tests' waits; defined once in wait.ts.
export { until } from './wait.js';

/** Ajv (draft 2020-12, formats) loaded with every schema in schemas/. */
export function schemaValidator(): Ajv2020 {
  const ajv = new Ajv2020({ allErrors: true, strict: true, strictRequired: false });
  addFormats(ajv);
  const dir = fileURLToPath(new URL('../../schemas/', import.meta.url));
  for (const file of fs.readdirSync(dir).filter((f) => f.endsWith('.schema.json'))) {
    ajv.addSchema(JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')), file);
  }
  return ajv;
}

/** Throw, with ajv's errors, unless `data` is valid against schemas/<name>. */
export function assertValid(ajv: Ajv2020, name: string, data: unknown): void {
  const validate = ajv.getSchema(name);
  if (!validate) throw new Error(`no schema named ${name} in schemas/`);
  if (!validate(data)) {
    throw new Error(`payload does not match ${name}: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(data, null, 2).slice(0, 2000)}`);
  }
}

/**
 * The daemon's command wiring around a bare publisher: a router with `config`'s commands on it.
 * `follow` applies a changed config the way the daemon does after a push.
 */
export function commandsOn(
  publisher: Publisher, config: AppConfig, handlers: Partial<DeviceCommandHandlers>, log: Logger,
): { router: CommandRouter; follow(config: AppConfig): void } {
  const router = new CommandRouter(publisher.inbound, log);
  const group = new CommandGroup(router);
  const unexpected = (what: string) => () => {
    throw new Error(`unexpected ${what}`);
  };
  const all: DeviceCommandHandlers = {
    trigger: unexpected('trigger'), refuseTrigger: unexpected('malformed trigger'), config: unexpected('config request'), revision: () => 0, resetCounters: unexpected('counters reset'),
    selectRecipe: unexpected('recipe request'), activeRecipes: () => ({}), ...handlers,
  };
  const follow = (next: AppConfig) => group.sync(deviceCommands(next, publisher.topics, all, log));
  follow(config);
  return { router, follow };
}
