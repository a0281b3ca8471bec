// Preloaded into the daemon process by the benchmark (node --import): event-loop delay and
// utilisation, the figures that show whether something blocks the loop (a synchronous
// session.run, JPEG encoding, JSON), the garbage collector's pauses of the main thread (what
// cutting allocations could win), and optionally a V8 CPU profile of the measurement window
// only (not of start-up). Talks over the IPC channel the benchmark opened: 'reset' starts a
// window, 'snapshot' answers with the window's figures. The channel is unref'd, so the daemon
// still exits by itself after SIGTERM.
import fs from 'node:fs';
import { Session } from 'node:inspector';
import { monitorEventLoopDelay, performance, PerformanceObserver } from 'node:perf_hooks';

if (process.send) {
  const profileFile = process.env.CRAD_BENCH_PROFILE;
  const inspector = profileFile ? new Session() : null;
  inspector?.connect();
  const post = (method: string, params?: object) =>
    new Promise<unknown>((resolve, reject) => inspector!.post(method, params ?? {}, (err, result) => (err ? reject(err) : resolve(result))));

  const delay = monitorEventLoopDelay({ resolution: 5 });
  delay.enable();
  // GC pauses as V8 reports them: a CPU profile's "(garbage collector)" also charges work it
  // does beside the pause, several times this figure.
  let gcPauses = { count: 0, ms: 0 };
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      gcPauses.count += 1;
      gcPauses.ms += entry.duration;
    }
  }).observe({ entryTypes: ['gc'] });
  let elu = performance.eventLoopUtilization();
  process.on('message', (message: unknown) => {
    void (async () => {
      if (message === 'reset') {
        delay.reset();
        gcPauses = { count: 0, ms: 0 };
        elu = performance.eventLoopUtilization();
        if (inspector) {
          await post('Profiler.enable');
          await post('Profiler.start');
        }
      } else if (message === 'snapshot') {
        const ms = (ns: number) => ns / 1e6;
        const figures = {
          eventLoopDelayMs: { mean: ms(delay.mean), p50: ms(delay.percentile(50)), p99: ms(delay.percentile(99)), max: ms(delay.max) },
          eventLoopUtilization: performance.eventLoopUtilization(elu).utilization,
          heapUsedBytes: process.memoryUsage().heapUsed,
          gcPauses,
        };
        if (inspector && profileFile) {
          const { profile } = (await post('Profiler.stop')) as { profile: unknown };
          fs.writeFileSync(profileFile, JSON.stringify(profile));
        }
        process.send!({ probe: figures });
      }
    })();
  });
  process.channel?.unref();
}
