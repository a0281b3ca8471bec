// CPU time and memory of a process, read from /proc (Linux): what the daemon costs, measured from
// outside it so that measuring does not load it.
import fs from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat's utime/stime (USER_HZ; 100 on every Linux ABI in use). */
const USER_HZ = 100;

export interface ProcSample {
  atMs: number;
  /** user + system CPU seconds since the process started. */
  cpuSeconds: number;
  rssBytes: number;
  /** Peak RSS so far (VmHWM). */
  peakRssBytes: number;
}

export function sampleProcess(pid: number): ProcSample | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN) * 1024;
    return { atMs: performance.now(), cpuSeconds: (utime + stime) / USER_HZ, rssBytes: kb('VmRSS'), peakRssBytes: kb('VmHWM') };
  } catch {
    return null;
  }
}

/** CPU use between two samples in percent of one core (200 % = both cores of a 2-core machine). */
export function cpuPercent(a: ProcSample, b: ProcSample): number {
  const wall = (b.atMs - a.atMs) / 1000;
  return wall > 0 ? (100 * (b.cpuSeconds - a.cpuSeconds)) / wall : Number.NaN;
}

/** Busy CPU seconds of the whole machine so far (all cores; /proc/stat, idle and iowait excluded). */
export function machineBusySeconds(): number {
  const line = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user, nice, system, , , irq, softirq, steal] = line as [number, number, number, number, number, number, number, number];
  return (user + nice + system + irq + softirq + steal) / USER_HZ;
}

/**
 * CPU the rest of the machine used while something was measured: machine busy time minus the
 * measured processes' own, in % of one core. Other people's jobs show up here; a run with a high
 * figure is not a clean measurement.
 */
export class OtherLoad {
  private readonly startBusy = machineBusySeconds();
  private readonly startMs = performance.now();
  private readonly startSelf = process.cpuUsage();

  /** `ownCpuSeconds`: CPU seconds of the measured child processes over the same interval. */
  percent(ownCpuSeconds = 0): number {
    const wall = (performance.now() - this.startMs) / 1000;
    const self = process.cpuUsage(this.startSelf);
    const own = ownCpuSeconds + (self.user + self.system) / 1e6;
    return wall > 0 ? (100 * Math.max(0, machineBusySeconds() - this.startBusy - own)) / wall : Number.NaN;
  }
}
