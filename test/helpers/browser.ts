// The console's pages in Debian's chromium (puppeteer-core with its executable path: never a
// downloaded browser).
import puppeteer, { type Browser, type Page } from 'puppeteer-core';

export function launchChromium(): Promise<Browser> {
  // protocolTimeout above the tests' longest wait: a waitForFunction of 5 min must not end at puppeteer's 180 s default.
  return puppeteer.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--no-sandbox'], protocolTimeout: 900_000 });
}

/** A new page at `url`, logged in with `token` when given; its script errors are pushed to `errors`. */
export async function openPage(browser: Browser, url: string, options: { errors: string[]; token?: string; width?: number; height?: number }): Promise<Page> {
  const page = await browser.newPage();
  if (options.token) await page.setExtraHTTPHeaders({ authorization: `Bearer ${options.token}` });
  await page.setViewport({ width: options.width ?? 1280, height: options.height ?? 900 });
  page.on('pageerror', (err) => options.errors.push(String(err)));
  await page.goto(url);
  return page;
}
