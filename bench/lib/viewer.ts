// One live-view viewer, as a browser holds it: an MJPEG stream read to the end for as long as it
// is connected. The bench's console row and the soak use it to measure what a viewer costs.

export interface MjpegViewer {
  /** JPEG images received so far (counted by their start marker FF D8). */
  frames(): number;
  close(): void;
}

export async function connectMjpegViewer(url: string): Promise<MjpegViewer> {
  const controller = new AbortController();
  const response = await fetch(url, { signal: controller.signal });
  if (!response.ok || !response.body) {
    controller.abort();
    throw new Error(`live view ${url} answered ${response.status}`);
  }
  const reader = response.body.getReader();
  let frames = 0;
  void (async () => {
    for (;;) {
      const { done, value } = await reader.read().catch(() => ({ done: true, value: undefined }));
      if (done || !value) return;
      for (let i = 0; i + 1 < value.length; i++) if (value[i] === 0xff && value[i + 1] === 0xd8) frames++;
    }
  })();
  return { frames: () => frames, close: () => controller.abort() };
}
