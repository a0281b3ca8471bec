import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Backoff, backoffCeiling, backoffDelay } from '../src/shared/backoff.js';

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

test('backoff: ceiling doubles from min to max, delay is drawn in [min, ceiling], reset starts over', () => {
  const high = new Backoff(100, 1000, () => 1);
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => high.next().delayMs), [100, 200, 400, 800, 1000, 1000]);
  high.reset();
  assert.equal(high.next().ceilingMs, 100);
  const low = new Backoff(100, 1000, () => 0);
  assert.equal(low.next().delayMs, 100);
  const half = new Backoff(100, 1000, () => 0.5);
  half.next();
  assert.deepEqual(half.next(), { delayMs: 150, ceilingMs: 200 });
  assert.equal(new Backoff(0, 0, () => 1).next().ceilingMs, 10, 'a zero minimum cannot become a busy loop');
});
