// model.daemonNice: the daemon's own threads (event loop, libuv's pool, V8's helpers) run some nice
// levels below the inference threads. On a machine whose cores the intra-op threads fill, the
// daemon's work between and beside the runs then takes the cores only when the model leaves
// them, instead of stalling a run half by preempting one of its threads (bench/README.md).
// Linux only (per-thread nice through /proc/self/task); a lowered thread is not raised again
// without privileges, so the key applies at restart.
import fs from 'node:fs';
import os from 'node:os';
import type { Logger } from '../shared/log.js';

/** The main thread's nice when the daemon started: the inference threads keep it. */
const baseNice = os.getPriority();

/** Thread ids of this process (Linux); [] where /proc is not there. */
function threadIds(): number[] {
  try {
    return fs.readdirSync('/proc/self/task').map(Number);
  } catch {
    return [];
  }
}

/**
 * Lower every thread of the process but `keep` to the start nice + `nice` (never raising one).
 * Threads made later by a lowered thread inherit its nice. Returns how many were lowered.
 */
export function lowerOwnThreads(nice: number, keep: Set<number>, log: Logger): number {
  const target = Math.min(19, baseNice + nice);
  const threads = threadIds();
  if (threads.length === 0) {
    log.warn({ nice }, 'model.daemonNice needs Linux (/proc/self/task): the daemon\'s threads keep their priority');
    return 0;
  }
  let lowered = 0;
  for (const tid of threads) {
    if (keep.has(tid)) continue;
    try {
      if (os.getPriority(tid) >= target) continue;
      os.setPriority(tid, target);
      lowered++;
    } catch {
      // The thread ended meanwhile.
    }
  }
  log.info({ nice: target, lowered, inferenceThreads: keep.size }, 'daemon threads lowered below the inference threads');
  return lowered;
}
