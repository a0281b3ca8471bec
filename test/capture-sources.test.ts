// Each source kind against the real thing: OpenCV decoding real files, real GStreamer pipelines.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import cv from '../src/cv.js';
import { FileSource } from '../src/capture/file.js';
import { FolderSource } from '../src/capture/folder.js';
import { gigePipeline } from '../src/capture/gige.js';
import { GStreamerSource } from '../src/capture/gstreamer.js';
import type { CameraSource } from '../src/capture/source.js';
import { redactUrls } from '../src/shared/redact.js';
import { StreamSource } from '../src/capture/stream.js';
import { UsbSource } from '../src/capture/usb.js';
import { imageNumber, memoryLogger, numberedImage, writeImages } from './helpers/capture.js';
import { tempDir } from './helpers/cleanup.js';

/** Read n frames (or until the source ends), returning the numbers the images encode. */
async function readNumbers(source: CameraSource, n: number): Promise<Array<number | null>> {
  const numbers: Array<number | null> = [];
  for (let i = 0; i < n; i++) {
    const mat = await source.read();
    numbers.push(mat ? imageNumber(mat) : null);
    mat?.release();
    if (!mat) break;
  }
  return numbers;
}

function folderWithCorruptImage(): string {
  const dir = tempDir('folder');
  writeImages(dir, 3);
  // Sorts between img-001 and img-002; not an image at all.
  fs.writeFileSync(path.join(dir, 'img-001-broken.png'), 'this is not a PNG');
  fs.writeFileSync(path.join(dir, 'notes.txt'), 'not an image extension: never read');
  return dir;
}

test('folder source once: images in name order, then the end; a corrupt image is skipped, counted and logged', async () => {
  const { log, records } = memoryLogger();
  const source = new FolderSource(folderWithCorruptImage(), false, log);
  await source.open();
  assert.deepEqual(await readNumbers(source, 10), [0, 1, 2, null]);
  assert.equal(source.skipped, 1);
  const warning = records().find((r) => r.msg === 'image does not decode; skipped');
  assert.ok(warning, 'a warning names the skipped image');
  assert.match(String(warning.file), /img-001-broken\.png$/);
  source.close();
});

test('folder source loop: starts again after the last image, skipping the corrupt one each pass', async () => {
  const source = new FolderSource(folderWithCorruptImage(), true, memoryLogger().log);
  await source.open();
  assert.deepEqual(await readNumbers(source, 7), [0, 1, 2, 0, 1, 2, 0]);
  assert.equal(source.skipped, 2);
  source.close();
});

test('folder source: a folder with no images, or only broken ones, is an error naming the folder', async () => {
  const empty = tempDir('empty');
  await assert.rejects(new FolderSource(empty, true, memoryLogger().log).open(), /no image files/);
  const broken = tempDir('broken');
  fs.writeFileSync(path.join(broken, 'a.png'), 'junk');
  fs.writeFileSync(path.join(broken, 'b.jpg'), 'junk');
  const source = new FolderSource(broken, true, memoryLogger().log);
  await source.open();
  await assert.rejects(source.read(), /none of 2 image files decodes/);
  await assert.rejects(new FolderSource('/nonexistent/dir', true, memoryLogger().log).open(), /\/nonexistent\/dir/);
});

function writeVideo(frames: number): string {
  const file = path.join(tempDir('video'), 'clip.avi');
  const writer = new cv.VideoWriter(file, cv.VideoWriter.fourcc('MJPG'), 25, new cv.Size(64, 48), true);
  for (let i = 0; i < frames; i++) {
    // Multiples of 20 survive JPEG rounding unambiguously.
    const mat = numberedImage(i * 20);
    writer.write(mat);
    mat.release();
  }
  writer.release();
  return file;
}

function roundTo20(n: number | null): number | null {
  return n === null ? null : Math.round(n / 20);
}

test('video file source: every frame, then the end (loop off) or the start again (loop on)', async () => {
  const file = writeVideo(6);
  const once = new FileSource(file, false);
  await once.open();
  assert.equal(once.nativeFps, 25, 'the file rate paces replay when no fps is set');
  assert.deepEqual((await readNumbers(once, 10)).map(roundTo20), [0, 1, 2, 3, 4, 5, null]);
  once.close();

  const looping = new FileSource(file, true);
  await looping.open();
  assert.deepEqual((await readNumbers(looping, 9)).map(roundTo20), [0, 1, 2, 3, 4, 5, 0, 1, 2]);
  looping.close();
});

test('video file source: a missing or unreadable file is an error naming it', async () => {
  await assert.rejects(new FileSource('/nonexistent/clip.avi', false).open(), /video file \/nonexistent\/clip\.avi/);
  const junk = path.join(tempDir('junk'), 'junk.avi');
  fs.writeFileSync(junk, 'not a video');
  const source = new FileSource(junk, false);
  // OpenCV may refuse to open it or open it and deliver nothing; either way it is an error.
  await assert.rejects(async () => {
    await source.open();
    await source.read();
  }, /junk\.avi/);
  source.close();
});

test('gstreamer source: videotestsrc frames arrive as BGR Mats; the end of the stream is a failure', async () => {
  const source = new GStreamerSource('videotestsrc num-buffers=3 ! video/x-raw,width=160,height=120 ! videoconvert ! video/x-raw,format=BGR ! appsink');
  await source.open();
  for (let i = 0; i < 3; i++) {
    const mat = await source.read();
    assert.ok(mat);
    assert.deepEqual([mat.rows, mat.cols, mat.channels], [120, 160, 3]);
    mat.release();
  }
  // A live source that ends has failed (the camera reopens it).
  await assert.rejects(source.read(), /delivered no frame/);
  source.close();
});

test('gstreamer source: a pipeline that cannot start is an Error (not a string) describing it', async () => {
  const source = new GStreamerSource('nosuchelement ! appsink');
  const err = await source.open().then(() => null, (e: unknown) => e);
  assert.ok(err instanceof Error, `expected an Error, got ${typeof err}`);
  assert.match(err.message, /gstreamer pipeline "nosuchelement ! appsink"/);
  assert.throws(() => new GStreamerSource('videotestsrc ! fakesink'), /must end in appsink/);
});

test('usb source: an absent device fails with its path; bad settings are rejected up front', async () => {
  const source = new UsbSource({ device: '/dev/video99', width: 640, height: 480, fps: 10, fourcc: 'MJPG' }, memoryLogger().log);
  await assert.rejects(source.open(), /usb camera \/dev\/video99/);
  await assert.rejects(new UsbSource({ device: '99', width: 0, height: 0, fps: 0, fourcc: '' }, memoryLogger().log).open(), /\/dev\/video99/);
  assert.throws(() => new UsbSource({ device: 'front', width: 0, height: 0, fps: 0, fourcc: '' }, memoryLogger().log), /index .* or a \/dev path/);
  assert.throws(() => new UsbSource({ device: '0', width: 0, height: 0, fps: 0, fourcc: 'MJPEG' }, memoryLogger().log), /fourcc must be 4 characters/);
});

/** An MJPEG-over-HTTP camera on its own thread: FFmpeg's open is synchronous, so a server on this
 * thread's event loop could not answer it. */
async function mjpegServer(jpegs: Buffer[]): Promise<{ port: number; stop: () => Promise<number> }> {
  const worker = new Worker(`
    const http = require('node:http');
    const { workerData, parentPort } = require('node:worker_threads');
    const server = http.createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'multipart/x-mixed-replace; boundary=frame' });
      let i = 0;
      const timer = setInterval(() => {
        const jpeg = Buffer.from(workerData.jpegs[i++ % workerData.jpegs.length]);
        res.write('--frame\\r\\nContent-Type: image/jpeg\\r\\nContent-Length: ' + jpeg.length + '\\r\\n\\r\\n');
        res.write(jpeg);
        res.write('\\r\\n');
      }, 40);
      req.on('close', () => clearInterval(timer));
    });
    server.listen(0, '127.0.0.1', () => parentPort.postMessage(server.address().port));
  `, { eval: true, workerData: { jpegs } });
  const port = await new Promise<number>((resolve) => worker.once('message', resolve));
  return { port, stop: () => worker.terminate() };
}

test('http source: frames from a real MJPEG-over-HTTP stream, decoded by FFmpeg', async () => {
  const jpegs = [0, 1, 2].map((i) => {
    const mat = numberedImage(i * 60, 160, 120);
    const jpeg = cv.imencode('.jpg', mat);
    mat.release();
    return jpeg;
  });
  const server = await mjpegServer(jpegs);
  const source = new StreamSource('http', `http://viewer:pw@127.0.0.1:${server.port}/stream.mjpg`);
  try {
    await source.open();
    const numbers: number[] = [];
    for (let i = 0; i < 4; i++) {
      const mat = await source.read();
      assert.ok(mat);
      assert.deepEqual([mat.rows, mat.cols, mat.channels], [120, 160, 3]);
      numbers.push(Math.round(imageNumber(mat) / 60));
      mat.release();
    }
    assert.deepEqual(numbers, [0, 1, 2, 0], 'the frames the server sent, in order');
  } finally {
    source.close();
    await server.stop();
  }
});

test('rtsp/http sources: credentials never appear in descriptions or errors', async () => {
  assert.equal(redactUrls('rtsp://admin:s3cret@10.0.0.7:554/stream'), 'rtsp://[redacted]@10.0.0.7:554/stream');
  // Port 1 on loopback refuses the connection: fails fast in the preflight.
  const source = new StreamSource('rtsp', 'rtsp://admin:s3cret@127.0.0.1:1/stream');
  assert.doesNotMatch(source.description, /s3cret/);
  const err = await source.open().then(() => null, (e: unknown) => e);
  assert.ok(err instanceof Error);
  assert.match(err.message, /rtsp stream rtsp:\/\/\[redacted\]@127\.0\.0\.1:1\/stream/);
  assert.doesNotMatch(err.message, /s3cret/);
  assert.throws(() => new StreamSource('http', 'rtsp://10.0.0.7/stream'), /must start with http:\/\/ or https:\/\//);
  assert.throws(() => new StreamSource('rtsp', 'not a url at all'), /not a valid URL/);
});

test('gige pipeline: aravissrc by address, pixel format and size as caps, BGR appsink that drops stale frames', () => {
  assert.equal(
    gigePipeline({ address: '192.168.10.20', pixelFormat: '', width: 0, height: 0 }),
    'aravissrc camera-name=192.168.10.20 ! videoconvert ! video/x-raw,format=BGR ! appsink max-buffers=2 drop=true sync=false',
  );
  assert.equal(
    gigePipeline({ address: '192.168.10.20', pixelFormat: 'Mono8', width: 640, height: 480 }),
    'aravissrc camera-name=192.168.10.20 ! video/x-raw,format=GRAY8,width=640,height=480 ! videoconvert ! video/x-raw,format=BGR ! appsink max-buffers=2 drop=true sync=false',
  );
  assert.match(gigePipeline({ address: 'Basler-2222', pixelFormat: 'BayerRG8', width: 0, height: 0 }), /video\/x-bayer,format=rggb ! bayer2rgb ! videoconvert/);
  assert.throws(() => gigePipeline({ address: '10.0.0.1', pixelFormat: 'Mono12p', width: 0, height: 0 }), /pixelFormat "Mono12p" is not supported; use one of Mono8/);
  assert.throws(() => gigePipeline({ address: 'a ! fakesrc', pixelFormat: '', width: 0, height: 0 }), /gige address/);
});
