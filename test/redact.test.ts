import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SECRET_QUERY_PARAMS, redactUrls } from '../src/shared/redact.js';

test('user:password@ in a URL is replaced whole, host, port and path stay', () => {
  assert.equal(redactUrls('mqtts://user:s3cret@broker:8883'), 'mqtts://[redacted]@broker:8883');
  assert.equal(redactUrls('rtsp://admin@10.0.0.7/stream'), 'rtsp://[redacted]@10.0.0.7/stream');
  // A password holding an unescaped '@' does not leak its tail.
  assert.equal(redactUrls('rtsp://admin:p@ss@10.0.0.7:554/stream'), 'rtsp://[redacted]@10.0.0.7:554/stream');
});

test('every secret query parameter keeps its name and loses its value, in any case', () => {
  for (const name of SECRET_QUERY_PARAMS) {
    for (const spelled of [name, name.toUpperCase()]) {
      assert.equal(redactUrls(`https://cam/video?${spelled}=s3cret`), `https://cam/video?${spelled}=[redacted]`);
      assert.equal(redactUrls(`https://cam/video?a=1&${spelled}=s3cret&b=2#top`), `https://cam/video?a=1&${spelled}=[redacted]&b=2#top`);
    }
  }
});

test('harmless parameters, including ones that merely contain a secret name, stay readable', () => {
  const url = 'http://cam/mjpg?resolution=640x480&monkey=1&keyframe=5&tokens=2&fps=10';
  assert.equal(redactUrls(url), url);
  assert.equal(redactUrls('no url here, mail admin@example.com'), 'no url here, mail admin@example.com');
});

test('URLs inside plain text (a GStreamer pipeline, an error) are redacted where they stand', () => {
  const pipeline = 'rtspsrc location=rtsp://admin:pw@10.0.0.7/live?token=abc123&channel=1 latency=0 ! decodebin ! videoconvert ! appsink';
  assert.equal(
    redactUrls(pipeline),
    'rtspsrc location=rtsp://[redacted]@10.0.0.7/live?token=[redacted]&channel=1 latency=0 ! decodebin ! videoconvert ! appsink',
  );
  const quoted = 'souphttpsrc location="https://u:pw@cam/x.mjpg?Signature=ZZ9" ! jpegdec ! appsink';
  assert.equal(redactUrls(quoted), 'souphttpsrc location="https://[redacted]@cam/x.mjpg?Signature=[redacted]" ! jpegdec ! appsink');
  const message = 'cannot open rtsp://a:b@h/s and http://c:d@i/t?api_key=k1 (Connection refused)';
  assert.equal(redactUrls(message), 'cannot open rtsp://[redacted]@h/s and http://[redacted]@i/t?api_key=[redacted] (Connection refused)');
});
