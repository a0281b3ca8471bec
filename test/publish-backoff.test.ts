import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffCeiling, backoffDelay } from '../src/publish/backoff.js';

test('the backoff ceiling doubles per failed attempt from minMs and stops at maxMs', () => {
  const ceilings = [0, 1, 2, 3, 4, 5, 6, 7].map((a) => backoffCeiling(a, 1000, 30_000));
  assert.deepEqual(ceilings, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  // Days of outage do not overflow into Infinity or NaN.
  assert.equal(backoffCeiling(10_000, 1000, 60_000), 60_000);
});

test('every delay lies between minMs and the ceiling: random 0 gives minMs, random ~1 the ceiling', () => {
  for (let attempt = 0; attempt < 12; attempt++) {
    const ceiling = backoffCeiling(attempt, 500, 20_000);
    assert.equal(backoffDelay(attempt, 500, 20_000, () => 0), 500);
    assert.equal(backoffDelay(attempt, 500, 20_000, () => 0.999999), ceiling);
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(attempt, 500, 20_000);
      assert.ok(d >= 500 && d <= ceiling, `attempt ${attempt}: delay ${d} outside [500, ${ceiling}]`);
    }
  }
});

test('delays are jittered (full jitter, not a fixed period) and grow with the attempt', () => {
  const draws = (attempt: number) => Array.from({ length: 400 }, () => backoffDelay(attempt, 100, 100_000));
  const early = draws(1);
  const late = draws(8);
  // Jitter: many distinct values, spread over most of the allowed range.
  assert.ok(new Set(late).size > 100, 'delays at one attempt should not repeat a fixed period');
  assert.ok(Math.max(...late) - Math.min(...late) > 0.8 * (backoffCeiling(8, 100, 100_000) - 100));
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  assert.ok(mean(late) > 10 * mean(early), `mean delay should grow: attempt 1 ${mean(early)}, attempt 8 ${mean(late)}`);
});

test('bad backoff inputs are refused with a message naming them', () => {
  assert.throws(() => backoffDelay(-1, 100, 1000), /attempt must be an integer >= 0/);
  assert.throws(() => backoffDelay(0, 1000, 100), /minMs <= maxMs/);
});
