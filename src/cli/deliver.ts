// `crad-edge deliver`: publish one model file to other stations with model/deliver. The file must
// already be served at --url (the fleet's file server); for each device this reads its retained
// status (the configuration revision a delivery must name), builds the request from the file
// (sha256, size), signs it for that device when a key is given, publishes it and waits for the
// device's final answer on model/response. A station's trained model (model.modelsDir/teach-*.onnx,
// `GET /api/teach/models/<sha256>.onnx`) goes to the fleet this way.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { signDelivery, type ModelDeliveryRequest } from '../control/model-delivery.js';
import { Topics } from '../publish/topics.js';

export interface DeliverOptions {
  broker: string;
  prefix: string;
  devices: string[];
  url: string;
  /** Ed25519 private key (PEM file); absent: unsigned (devices without remoteConfig.publicKey). */
  key?: string;
  /** File name on the devices (model.modelsDir); default: the file's own name. */
  name?: string;
  timeoutSeconds: number;
  /** A CA (PEM file) the broker's certificate is checked against, besides the system's. */
  ca?: string;
  /** Client certificate and its key (PEM files) for a broker that requires them. */
  cert?: string;
  certKey?: string;
  username?: string;
  /** From the environment (CRAD_DELIVER_PASSWORD), never the command line. */
  password?: string;
}

export interface DeviceOutcome {
  device: string;
  status: 'ok' | 'error';
  stage: string;
  error?: string;
}

interface Answer {
  transaction?: string;
  status?: string;
  stage?: string;
  error?: string;
}

/** Deliver `file` to every device; prints one line per device, exit code 0 when all applied it. */
export async function deliverCommand(file: string, options: DeliverOptions): Promise<number> {
  let outcomes: DeviceOutcome[];
  try {
    outcomes = await deliver(file, options);
  } catch (err) {
    console.error(`cannot deliver ${file}: ${(err as Error).message}`);
    return 2;
  }
  for (const o of outcomes) console.log(`${o.device}: ${o.status === 'ok' ? 'applied' : `failed at ${o.stage}: ${o.error ?? 'no answer'}`}`);
  return outcomes.every((o) => o.status === 'ok') ? 0 : 1;
}

export async function deliver(file: string, options: DeliverOptions): Promise<DeviceOutcome[]> {
  const bytes = fs.readFileSync(file);
  const sha256 = crypto.createHash('sha256').update(bytes).digest('hex');
  const name = options.name ?? path.basename(file);
  const key = options.key ? fs.readFileSync(options.key, 'utf8') : null;
  if (options.devices.length === 0) throw new Error('name at least one device (--device)');
  const client = await mqtt.connectAsync(options.broker, {
    protocolVersion: 5, reconnectPeriod: 0, clientId: `crad-edge-deliver-${process.pid}-${crypto.randomBytes(3).toString('hex')}`,
    ...(options.ca ? { ca: fs.readFileSync(options.ca) } : {}),
    ...(options.cert ? { cert: fs.readFileSync(options.cert) } : {}),
    ...(options.certKey ? { key: fs.readFileSync(options.certKey) } : {}),
    ...(options.username !== undefined ? { username: options.username } : {}),
    ...(options.password !== undefined ? { password: options.password } : {}),
  });
  try {
    return await Promise.all(options.devices.map(async (device) => {
      const topics = new Topics(options.prefix, device);
      try {
        const revision = await retainedRevision(client, topics.deviceStatus, options.timeoutSeconds * 1000);
        const request: Omit<ModelDeliveryRequest, 'signature'> = {
          transaction: `deliver-${sha256.slice(0, 12)}-${device}-${Date.now()}`, baseRevision: revision, url: options.url, sha256, size: bytes.length, name,
        };
        const payload = key ? signDelivery(request, key, device) : request;
        return await answered(client, topics, payload, options.timeoutSeconds * 1000, device);
      } catch (err) {
        return { device, status: 'error', stage: 'accepted', error: (err as Error).message } satisfies DeviceOutcome;
      }
    }));
  } finally {
    await client.endAsync();
  }
}

/** The configuration revision in a device's retained status. */
async function retainedRevision(client: MqttClient, topic: string, timeoutMs: number): Promise<number> {
  const status = await firstMessage(client, topic, timeoutMs, () => true);
  const revision = (status as { configRevision?: unknown } | null)?.configRevision;
  if (typeof revision !== 'number') throw new Error(`no configuration revision in ${topic} (is the device online and named right?)`);
  return revision;
}

/** Publish the request and wait for its final answer (ok at "applied", or an error). */
async function answered(client: MqttClient, topics: Topics, request: ModelDeliveryRequest | Omit<ModelDeliveryRequest, 'signature'>, timeoutMs: number, device: string): Promise<DeviceOutcome> {
  const final = firstMessage(client, topics.modelResponse, timeoutMs, (answer: Answer) => answer.transaction === request.transaction && answer.status !== 'progress');
  await new Promise((resolve) => setImmediate(resolve));
  await client.publishAsync(topics.modelDeliver, JSON.stringify(request), { qos: 1 });
  const answer = (await final) as Answer;
  return { device, status: answer.status === 'ok' ? 'ok' : 'error', stage: answer.stage ?? 'unknown', ...(answer.error ? { error: answer.error } : {}) };
}

/** The first JSON message on `topic` that `wanted` accepts, subscribed until then. */
function firstMessage(client: MqttClient, topic: string, timeoutMs: number, wanted: (message: never) => boolean): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => finish(new Error(`no answer on ${topic} within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs);
    const onMessage = (received: string, payload: Buffer) => {
      if (received !== topic) return;
      let message: unknown;
      try {
        message = JSON.parse(payload.toString('utf8'));
      } catch {
        return;
      }
      if (wanted(message as never)) finish(null, message);
    };
    const finish = (err: Error | null, message?: unknown) => {
      clearTimeout(timer);
      client.off('message', onMessage);
      void client.unsubscribeAsync(topic).catch(() => undefined);
      if (err) reject(err);
      else resolve(message);
    };
    client.on('message', onMessage);
    client.subscribeAsync(topic, { qos: 1 }).catch((err: Error) => finish(err));
  });
}
