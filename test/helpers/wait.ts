// Waiting in tests: poll a condition instead of sleeping a guessed time.

/** Wait until `predicate` holds (polling), or fail after timeoutMs naming `what`. */
export async function until(what: string, predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
