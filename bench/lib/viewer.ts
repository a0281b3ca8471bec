// One live-view viewer, as the console page holds it: the camera's server-sent event stream (one
// `frame` event per shown frame, the JPEG inside) read to the end for as long as it is connected.
// The bench's console row and the soak use it to measure what a viewer costs.

export interface LiveViewer {
  /** Frames received so far (counted by their `event: frame` lines). */
  frames(): number;
  close(): void;
}

const MARK = 'event: frame\n';

export async function connectLiveViewer(url: string): Promise<LiveViewer> {
  const controller = new AbortController();
  const response = await fetch(url, { signal: controller.signal });
  if (!response.ok || !response.body) {
    controller.abort();
    throw new Error(`live view ${url} answered ${response.status}`);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let frames = 0;
  void (async () => {
    let carry = '';
    for (;;) {
      const { done, value } = await reader.read().catch(() => ({ done: true, value: undefined }));
      if (done || value === undefined) return;
      const text = carry + value;
      for (let i = text.indexOf(MARK); i >= 0; i = text.indexOf(MARK, i + MARK.length)) frames++;
      // A mark split across chunks is counted with the next one (and never twice).
      const cut = text.lastIndexOf(MARK);
      carry = text.slice(Math.max(cut >= 0 ? cut + MARK.length : 0, text.length - MARK.length + 1));
    }
  })();
  return { frames: () => frames, close: () => controller.abort() };
}
