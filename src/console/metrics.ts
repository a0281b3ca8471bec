// /metrics: the daemon's figures in Prometheus' text format, from a registry of its own (never
// prom-client's global one). Results and failures are counted as they happen; everything the
// daemon already keeps (outbox, broker, cameras, model, revision) is read at scrape time.
// Labels are bounded: camera ids, verdicts, camera states, and the one loaded model.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { CameraState } from '../capture/frame.js';
import type { Result } from '../inference/types.js';
import type { ConsoleHost } from './host.js';

const CAMERA_STATES: readonly CameraState[] = ['starting', 'online', 'offline', 'error', 'stopped'];
const STAGE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const seconds = (ms: number): number => ms / 1000;

export class Metrics {
  readonly registry = new Registry();
  private readonly results: Counter<'camera' | 'verdict'>;
  private readonly processed: Counter<'camera'>;
  private readonly stages: Record<'queue' | 'preprocess' | 'inference' | 'postprocess', Histogram>;
  private readonly captureToPublish: Histogram<'camera'>;
  private readonly batchSize: Histogram;

  constructor(host: ConsoleHost) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.results = new Counter({
      name: 'crad_results_total', help: 'Inspected frames per camera by verdict (OK, NG; none: uncalibrated model; error: no result).',
      labelNames: ['camera', 'verdict'], registers,
    });
    this.processed = new Counter({ name: 'crad_frames_processed_total', help: 'Frames inspected (a result was made).', labelNames: ['camera'], registers });
    const stage = (name: string, help: string) => new Histogram({ name: `crad_${name}_seconds`, help, buckets: STAGE_BUCKETS, registers });
    this.stages = {
      queue: stage('queue', 'Time a frame waited between capture and its batch, per inspected frame.'),
      preprocess: stage('preprocess', 'Pre-processing time of the frame\'s batch, per inspected frame.'),
      inference: stage('inference', 'Model run time of the frame\'s batch, per inspected frame.'),
      postprocess: stage('postprocess', 'Post-processing time (score, regions, crops, overlay) per frame.'),
    };
    this.captureToPublish = new Histogram({
      name: 'crad_capture_to_publish_seconds', help: 'Capture until the result is handed to the publishers, per camera.',
      labelNames: ['camera'], buckets: STAGE_BUCKETS, registers,
    });
    this.batchSize = new Histogram({ name: 'crad_batch_size', help: 'Frames in the batch each inspected frame ran in.', buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256], registers });

    // Figures the daemon keeps, read when Prometheus scrapes.
    const perCamera = (read: (camera: ReturnType<ConsoleHost['cameras']>[number]) => number | null) => function (this: Counter<'camera'> | Gauge<'camera'>) {
      this.reset();
      for (const camera of host.cameras()) {
        const value = read(camera);
        if (value === null) continue;
        if (this instanceof Gauge) this.set({ camera: camera.id }, value);
        else this.inc({ camera: camera.id }, value);
      }
    };
    new Counter({ name: 'crad_frames_captured_total', help: 'Frames the camera handed to the pipeline (restarts at 0 when the camera is rebuilt).', labelNames: ['camera'], registers, collect: perCamera((c) => c.stats?.captured ?? null) });
    new Counter({
      name: 'crad_frames_dropped_total', help: 'Frames replaced by a newer one before the model took them (latest frame wins).', labelNames: ['camera'], registers,
      collect: perCamera((c) => host.pipelineStats().dropped[c.id] ?? 0),
    });
    new Counter({ name: 'crad_camera_reopens_total', help: 'Reopen attempts after capture failures.', labelNames: ['camera'], registers, collect: perCamera((c) => c.stats?.reconnects ?? null) });
    new Gauge({
      name: 'crad_camera_state', help: 'The camera\'s state: 1 for the current one.', labelNames: ['camera', 'state'], registers,
      collect() {
        this.reset();
        for (const camera of host.cameras()) {
          for (const state of CAMERA_STATES) this.set({ camera: camera.id, state }, camera.status?.state === state ? 1 : 0);
        }
      },
    });
    const publisherGauge = (name: string, help: string, read: (stats: ReturnType<ConsoleHost['publisherStats']>) => number) =>
      new Gauge({ name, help, registers, collect() { this.set(read(host.publisherStats())); } });
    publisherGauge('crad_outbox_pending_messages', 'Messages in the outbox waiting for the broker\'s acknowledgement.', (s) => s.outbox.pending);
    publisherGauge('crad_outbox_pending_bytes', 'Bytes of the messages waiting in the outbox.', (s) => s.outbox.pendingBytes);
    publisherGauge('crad_outbox_oldest_age_seconds', 'Age of the oldest message waiting in the outbox (0 when empty).', (s) => (s.outbox.oldestAt ? Math.max(0, seconds(Date.now() - Date.parse(s.outbox.oldestAt))) : 0));
    publisherGauge('crad_broker_connected', '1 while the MQTT broker connection is up.', (s) => (s.connected ? 1 : 0));
    new Counter({
      name: 'crad_broker_reconnects_total', help: 'Broker connections made after the first.', registers,
      collect() { this.reset(); this.inc(Math.max(0, host.publisherStats().connects - 1)); },
    });
    new Gauge({
      name: 'crad_model_info', help: 'The loaded model (always 1; its identity is in the labels).', labelNames: ['name', 'hash', 'variant', 'provider', 'input_form'], registers,
      collect() {
        const model = host.model();
        this.reset();
        this.set({ name: model.name, hash: model.hash, variant: model.variant, provider: model.executionProvider, input_form: model.input.form }, 1);
      },
    });
    new Gauge({ name: 'crad_config_revision', help: 'Revision of the running configuration.', registers, collect() { this.set(host.revision()); } });
  }

  observeResult(result: Result, captureToPublishMs: number): void {
    const camera = result.frame.cameraId;
    this.processed.inc({ camera });
    this.results.inc({ camera, verdict: result.verdict ?? 'none' });
    this.stages.queue.observe(seconds(result.latency.queueMs));
    this.stages.preprocess.observe(seconds(result.latency.preprocessMs));
    this.stages.inference.observe(seconds(result.latency.inferenceMs));
    this.stages.postprocess.observe(seconds(result.latency.postprocessMs));
    this.captureToPublish.observe({ camera }, seconds(captureToPublishMs));
    this.batchSize.observe(result.latency.batchSize);
  }

  observeFailure(cameraId: string): void {
    this.results.inc({ camera: cameraId, verdict: 'error' });
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
