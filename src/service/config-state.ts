// The running configuration and its revision: what every room reads, changed only when a push is
// committed (config-push.ts) or rolled back. It also answers the device status's `config` part.
import type { AppConfig } from '../config/load.js';
import type { LayeredConfig, LayerRevision } from '../config/layers.js';
import type { ConfigLayerStatus } from '../publish/payloads.js';

export class ConfigState {
  config: AppConfig;
  revision: number;
  /** The pushed layer's changes over the file at the running revision. */
  layerChanges: Record<string, unknown>;
  rollbackInfo: ConfigLayerStatus['rollback'] = null;

  constructor(readonly layered: LayeredConfig) {
    this.config = layered.config;
    this.revision = layered.revision;
    const record = this.layerRecord(this.revision);
    this.layerChanges = record?.changes ?? {};
    if (record?.origin.kind === 'rollback') {
      this.rollbackInfo = { undid: record.origin.undid, to: this.revision, at: record.createdAt, reason: record.origin.reason };
    }
  }

  layerRecord(revision: number): LayerRevision | null {
    try {
      return revision > 0 ? this.layered.store.revision(revision) : null;
    } catch {
      return null; // a legacy revision kept in the file itself
    }
  }

  status(): ConfigLayerStatus {
    let state = null;
    try {
      state = this.layered.store.state();
    } catch {
      // an unreadable state file was reported at load
    }
    return { revision: this.revision, lastGood: state?.lastGood ?? this.revision, probation: state?.probation?.revision ?? null, rollback: this.rollbackInfo };
  }
}
