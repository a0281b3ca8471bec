// What the benchmark ran on: CPU, cores, OS and the versions of everything measured.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import cv from '../../src/cv.js';

export interface Machine {
  cpuModel: string;
  cores: number;
  memoryGiB: number;
  os: string;
  versions: Record<string, string>;
}

function packageVersion(root: string, name: string): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(root, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return 'not installed';
  }
}

function commandLine(file: string, args: string[]): string {
  try {
    return execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 }).trim();
  } catch (err) {
    // mosquitto -h prints its version and exits with 3.
    const out = ((err as { stdout?: string }).stdout ?? '').trim();
    return out || 'unknown';
  }
}

export function describeMachine(root: string, python: string): Machine {
  const cpus = os.cpus();
  const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  const flags = /^flags\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.split(' ') ?? [];
  const simd = ['avx512f', 'avx2', 'fma', 'avx'].filter((f) => flags.includes(f));
  const osRelease = fs.existsSync('/etc/os-release') ? /^PRETTY_NAME="?([^"\n]*)"?/m.exec(fs.readFileSync('/etc/os-release', 'utf8'))?.[1] : undefined;
  const mosquitto = commandLine(process.env.MOSQUITTO_BIN ?? '/usr/sbin/mosquitto', ['-h']).split('\n')[0] ?? 'unknown';
  const pythonVersions = commandLine(python, ['-c', 'import sys, torch, onnx; print(sys.version.split()[0], torch.__version__, onnx.__version__, torch.get_num_threads())']).split(' ');
  return {
    cpuModel: `${cpus[0]?.model ?? 'unknown'}${simd.length ? ` (${simd.join(', ')})` : ''}`,
    cores: os.availableParallelism(),
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    os: `${osRelease ?? os.type()} ${os.release()} ${os.arch()}`,
    versions: {
      node: process.version,
      'onnxruntime-node': packageVersion(root, 'onnxruntime-node'),
      opencv: `${cv.version.major}.${cv.version.minor}.${cv.version.revision} (@u4/opencv4nodejs ${packageVersion(root, '@u4/opencv4nodejs')})`,
      mqtt: packageVersion(root, 'mqtt'),
      mosquitto: mosquitto.replace(/^mosquitto version /, ''),
      python: pythonVersions[0] ?? 'unknown',
      torch: pythonVersions[1] ?? 'unknown',
      onnx: pythonVersions[2] ?? 'unknown',
    },
  };
}
