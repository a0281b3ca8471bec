// How close two computations of a model's output must be: a tolerance relative to the output's
// scale, max(1, its largest magnitude in either), the trainer's rule (training/crad/export.py
// output_tolerance). Raw scores of trained models are in the tens, where float32 rounding alone
// exceeds any absolute bound that would still mean something for outputs below 1.
import assert from 'node:assert/strict';

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

/** The largest difference allowed between two computations of one output: `tolerance` x
 * max(1, the largest magnitude in either). */
export function allowedDifference(tolerance: number, a: ArrayLike<number>, b: ArrayLike<number>): number {
  let scale = 1;
  for (const values of [a, b]) for (let i = 0; i < values.length; i++) scale = Math.max(scale, Math.abs(values[i]!));
  return tolerance * scale;
}

/** Assert that `actual` reproduces `expected` within the relative rule, naming the output. */
export function assertWithin(name: string, actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number): void {
  const difference = maxAbsDiff(actual, expected);
  const allowed = allowedDifference(tolerance, actual, expected);
  assert.ok(difference <= allowed, `${name}: max abs difference ${difference} > allowed ${allowed} (${tolerance} x scale)`);
}
