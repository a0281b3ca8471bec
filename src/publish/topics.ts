/** The topic layout, in one place: everything lives under <mqtt.topicPrefix>/<device.id>. */
export class Topics {
  readonly prefix: string;

  constructor(topicPrefix: string, deviceId: string) {
    this.prefix = `${topicPrefix}/${deviceId}`;
  }

  /** Retained device status (online/offline, model, cameras, outbox); also the Last Will. */
  get deviceStatus(): string {
    return `${this.prefix}/status`;
  }
  /** Retained status of one camera. */
  cameraStatus(camera: string): string {
    return `${this.prefix}/${camera}/status`;
  }
  result(camera: string): string {
    return `${this.prefix}/${camera}/result`;
  }
  /** JPEG crop of region <index> (the index into the result's regions list). */
  crop(camera: string, index: number): string {
    return `${this.prefix}/${camera}/crop/${index}`;
  }
  overlay(camera: string): string {
    return `${this.prefix}/${camera}/overlay`;
  }
  /** Inbound: capture the next frame of a trigger-mode camera. */
  trigger(camera: string): string {
    return `${this.prefix}/${camera}/trigger`;
  }
  get configSet(): string {
    return `${this.prefix}/config/set`;
  }
  get configGet(): string {
    return `${this.prefix}/config/get`;
  }
  get configResponse(): string {
    return `${this.prefix}/config/response`;
  }
  /** Inbound: reset the production counters (all cameras, or {"camera": id}). */
  get countersReset(): string {
    return `${this.prefix}/counters/reset`;
  }
  get countersResponse(): string {
    return `${this.prefix}/counters/response`;
  }
  /** Inbound: run the golden samples against the running model; answered on goldenResponse. */
  get goldenRun(): string {
    return `${this.prefix}/golden/run`;
  }
  get goldenResponse(): string {
    return `${this.prefix}/golden/response`;
  }
  /** Inbound: read the audit log, a page at a time; answered on auditResponse. */
  get auditGet(): string {
    return `${this.prefix}/audit/get`;
  }
  get auditResponse(): string {
    return `${this.prefix}/audit/response`;
  }
  /** Inbound: download, check and swap in a model; every stage is answered on modelResponse. */
  get modelDeliver(): string {
    return `${this.prefix}/model/deliver`;
  }
  get modelResponse(): string {
    return `${this.prefix}/model/response`;
  }
  /** Inbound: switch a camera's recipe (schemas/recipe-set.schema.json). */
  get recipeSet(): string {
    return `${this.prefix}/recipe/set`;
  }
  get recipeResponse(): string {
    return `${this.prefix}/recipe/response`;
  }
  /** Inbound: on-device training (start, cancel, promote, rollback); answered on trainResponse. */
  train(command: 'start' | 'cancel' | 'promote' | 'rollback'): string {
    return `${this.prefix}/train/${command}`;
  }
  get trainResponse(): string {
    return `${this.prefix}/train/response`;
  }
  /** Retained: the training run (TeachStatus.run) on every change. */
  get trainProgress(): string {
    return `${this.prefix}/train/progress`;
  }
}
