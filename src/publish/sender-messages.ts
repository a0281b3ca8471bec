// What the sender publishes: the outbox entries a result becomes (the result, its crops and
// overlay), and the MQTT message each stored row goes out as (MQTT 5 properties, or a JSON
// envelope for 3.1.1 images). Pure functions: when and how often is sender.ts's business.
import { performance } from 'node:perf_hooks';
import type { IPublishPacket, MqttClient } from 'mqtt';
import type { AppConfig } from '../config/load.js';
import type { Result } from '../inference/types.js';
import { isV5 } from './connection.js';
import type { OutboxEntry, OutboxRow } from './outbox.js';
import { SCHEMA_VERSION, finishResult, storedResult, uuidv7, type ImageEnvelope, type StoredResult } from './payloads.js';
import type { Topics } from './topics.js';

type ImageKind = 'crop' | 'overlay';
export interface ImageMeta {
  image: ImageKind;
  index: number | null;
  camera: string;
}
interface ResultMeta {
  bootId: string;
  capturedMono: number;
  camera: string;
  sequence: number;
}
/** A crop/overlay not kept in the outbox (outbox.includeImages false): sent right after its result. */
export interface VolatileImage {
  topic: string;
  payload: Buffer;
  messageId: string;
  meta: ImageMeta;
}

export interface Message {
  payload: Buffer;
  properties?: IPublishPacket['properties'];
}

/** Who is sending: the names and the boot a result's entries carry. */
export interface SenderIdentity {
  topics: Topics;
  device: string;
  bootId: string;
}

/**
 * A result as outbox entries: its own (not yet live), and its crops/overlay (to keep in the
 * outbox as further entries, or to hold in memory until the result is sent).
 */
export function resultEntries(result: Result, config: AppConfig, sender: SenderIdentity): { entry: OutboxEntry; images: VolatileImage[]; imageEntries: OutboxEntry[] } {
  const { topics } = sender;
  const messageId = uuidv7();
  const camera = result.frame.cameraId;
  const stored = storedResult(result, sender.device, messageId);
  const capturedAt = Date.parse(result.frame.capturedAt);
  const createdAt = Number.isFinite(capturedAt) ? capturedAt : Date.now();
  const meta: ResultMeta = { bootId: sender.bootId, capturedMono: result.frame.capturedMono, camera, sequence: result.frame.sequence };
  const { qos, retain } = config.mqtt;
  const entry: OutboxEntry = {
    kind: 'result', messageId, topic: topics.result(camera), payload: Buffer.from(JSON.stringify(stored)),
    qos: qos.result as 0 | 1 | 2, retain: retain.result, meta: meta as unknown as Record<string, unknown>, createdAt, live: false,
  };
  const images: VolatileImage[] = result.crops.map((payload, index) => ({
    topic: topics.crop(camera, index), payload, messageId, meta: { image: 'crop', index, camera },
  }));
  if (result.overlay) images.push({ topic: topics.overlay(camera), payload: result.overlay, messageId, meta: { image: 'overlay', index: null, camera } });
  const imageEntries = images.map((image): OutboxEntry => ({
    kind: 'image', messageId, topic: image.topic, payload: image.payload, qos: qos.image as 0 | 1 | 2, retain: retain.image,
    meta: image.meta as unknown as Record<string, unknown>, createdAt, live: false,
  }));
  return { entry, images, imageEntries };
}

/**
 * A stored result as sent: finished with its capture-to-publish time (monotonic within this boot,
 * wall clock across a restart) and whether it is a replay.
 */
export function resultMessage(client: MqttClient, row: OutboxRow, bootId: string, replayed: boolean): Message {
  const meta = row.meta as unknown as ResultMeta;
  const totalMs = meta.bootId === bootId ? performance.now() - meta.capturedMono : Date.now() - row.createdAt;
  const stored = JSON.parse(row.payload.toString('utf8')) as StoredResult;
  const payload = Buffer.from(JSON.stringify(finishResult(stored, new Date(), totalMs, replayed)));
  const properties: IPublishPacket['properties'] = isV5(client)
    ? {
      contentType: 'application/json',
      payloadFormatIndicator: true,
      userProperties: { messageId: row.messageId, camera: meta.camera, sequence: String(meta.sequence), replayed: String(replayed) },
    }
    : undefined;
  return { payload, properties };
}

/** MQTT 5: the JPEG itself with content type and correlation data; 3.1.1: a base64 JSON envelope. */
export function imageMessage(client: MqttClient, device: string, messageId: string, meta: ImageMeta, jpeg: Buffer): Message {
  if (isV5(client)) {
    return {
      payload: jpeg,
      properties: {
        contentType: 'image/jpeg',
        correlationData: Buffer.from(messageId),
        userProperties: { messageId, camera: meta.camera, kind: meta.image, ...(meta.index !== null ? { index: String(meta.index) } : {}) },
      },
    };
  }
  const envelope: ImageEnvelope = {
    schemaVersion: SCHEMA_VERSION, messageId, device, camera: meta.camera, kind: meta.image, index: meta.index,
    contentType: 'image/jpeg', data: jpeg.toString('base64'),
  };
  return { payload: Buffer.from(JSON.stringify(envelope)) };
}

/** An MQTT 5 PUBACK/PUBREC reason code >= 0x80: the broker refuses this message, resending won't help. */
export function isBrokerRejection(err: Error): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'number' && code >= 0x80;
}
