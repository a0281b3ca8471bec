// model/deliver: one delivery at a time. Download (resumable), verify size and sha256, check the
// model contract, name the file, then push `model.path` through the same path as any config push
// (model queue, golden gate, probation); every stage is answered and the outcome audited.
import fs from 'node:fs';
import path from 'node:path';
import { isAllowed } from '../config/push-request.js';
import type { ConfigPushResponse } from '../config/remote.js';
import { mqttActor, type AuditActor } from '../control/actor.js';
import {
  checkDeliveredContract, deliveryFileName, download, DeliveryError, fileSha256, parseDeliveryRequest, partialPath, redactUrl,
  verifyDownload, type DeliveryStage, type ModelDeliveryRequest,
} from '../control/model-delivery.js';
import type { Command } from '../control/router.js';
import type { GoldenRun } from '../inference/golden.js';
import type { Logger } from '../shared/log.js';
import { syncDirectoryOf } from '../shared/atomic-write.js';
import { requestTransaction } from '../shared/request-transaction.js';
import { keyFingerprint, type AuditLog } from './audit.js';
import type { ConfigState } from './config-state.js';

/** How a delivery's own push is made (its request was verified as a delivery). */
export type DeliveryPush = (payload: Buffer, source: { actor: AuditActor; publicKey: string; onGolden: (run: GoldenRun) => void }) => Promise<ConfigPushResponse>;

export class ModelDelivery {
  /** The transaction of the delivery in progress: one at a time. */
  private delivering: string | null = null;

  constructor(private readonly state: ConfigState, private readonly push: DeliveryPush, private readonly audit: AuditLog, private readonly log: Logger) {}

  /** Each stage is answered through `progress`; the result is the last answer. */
  async deliver(payload: Buffer, properties: Command['properties'], progress: (answer: object) => void): Promise<object> {
    const transaction = requestTransaction(payload);
    let actor = mqttActor(properties, payload, null);
    const record = (outcome: 'applied' | 'failed', fields: { error?: string; details: Record<string, unknown>; revisionBefore?: number }) => this.audit.tryRecord({
      kind: 'delivery', outcome, actor, transaction, revisionBefore: fields.revisionBefore ?? this.state.revision, revisionAfter: this.state.revision,
      ...(fields.error !== undefined ? { error: fields.error } : {}), details: fields.details,
    }, this.log);
    if (this.delivering !== null) {
      const error = `a model delivery is already running (transaction ${this.delivering}); one at a time`;
      record('failed', { error, details: { stage: 'accepted' } });
      return { transaction, status: 'error', stage: 'accepted', error };
    }
    this.delivering = transaction ?? '(none)';
    let request: ModelDeliveryRequest | null = null;
    try {
      const config = this.state.config;
      request = parseDeliveryRequest(payload, {
        revision: this.state.revision, publicKey: config.remoteConfig.publicKey, deviceId: config.device.id, maxBytes: config.model.delivery.maxBytes,
      });
      if (!isAllowed('model.path', config.remoteConfig.allow)) throw new DeliveryError('accepted', '"model.path" is not in the remote allow-list (remoteConfig.allow)');
      const signedWith = config.remoteConfig.publicKey.trim() !== '' ? keyFingerprint(config.remoteConfig.publicKey) : null;
      // The delivery entries name the key that verified the request, as its config entry does.
      if (signedWith) actor = { ...actor, keyFingerprint: signedWith };
      const answer = await this.run(request, actor, progress);
      record('applied', { revisionBefore: request.baseRevision, details: deliveryDetails(request) });
      return answer;
    } catch (err) {
      const stage: DeliveryStage = err instanceof DeliveryError ? err.stage : 'applied';
      const error = (err as Error).message;
      this.log.warn({ transaction, stage, error }, 'model delivery failed; the running model is untouched');
      record('failed', { error, details: { stage, ...(request ? deliveryDetails(request) : {}) } });
      return { transaction, status: 'error', stage, error };
    } finally {
      this.delivering = null;
    }
  }

  private async run(request: ModelDeliveryRequest, actor: AuditActor, progress: (answer: object) => void): Promise<object> {
    const { transaction } = request;
    const stage = (name: DeliveryStage, extra: object = {}) => progress({ transaction, status: 'progress', stage: name, ...extra });
    stage('accepted');
    const { modelsDir, delivery } = this.state.config.model;
    const target = path.join(modelsDir, deliveryFileName(request));
    let created = false;
    if (fs.existsSync(target)) {
      // Never overwrite a model file: it may be the one serving, or another revision's.
      if ((await fileSha256(target)) !== request.sha256) throw new DeliveryError('accepted', `${path.basename(target)} already exists in ${modelsDir} with other content; name the delivery differently`);
      stage('verified', { file: target });
    } else {
      const partial = partialPath(modelsDir, request.sha256);
      await download(request.url, partial, request.size, { ...delivery }, ({ resumedFrom }) => stage('downloading', { resumedFrom }));
      stage('downloaded');
      await verifyDownload(partial, request);
      stage('verified');
      await checkDeliveredContract(partial);
      stage('contract');
      // Only a complete, checked file gets a name a push can use, and it is on disk before it has it.
      const fd = fs.openSync(partial, 'r');
      try {
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(partial, target);
      syncDirectoryOf(target);
      created = true;
    }
    let golden: GoldenRun | null = null;
    const push = Buffer.from(JSON.stringify({ transaction, baseRevision: request.baseRevision, changes: { 'model.path': target } }));
    const answer = await this.push(push, { actor, publicKey: '', onGolden: (run) => (golden = run) });
    if (answer.status !== 'ok') {
      if (created) fs.rmSync(target, { force: true });
      throw new DeliveryError(golden && !(golden as GoldenRun).passed ? 'golden' : 'applied', answer.error ?? 'the model push failed');
    }
    if (golden) stage('golden', { golden });
    return { transaction, status: 'ok', stage: 'applied', file: target, revision: answer.revision, golden };
  }
}

/** What the audit log keeps of a delivery request (the URL without credentials or query). */
function deliveryDetails(request: ModelDeliveryRequest): Record<string, unknown> {
  return { url: redactUrl(request.url), sha256: request.sha256, size: request.size, name: request.name ?? null };
}
