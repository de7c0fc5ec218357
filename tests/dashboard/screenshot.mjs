// Loads the management dashboard in headless Chromium with a bearer token and saves a
// screenshot. Usage: node screenshot.mjs URL TOKEN OUT.png
// Prints the page's headline numbers as JSON so the calling test can check what was rendered.
import { chromium } from "playwright-core";

const [url, token, out] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({ executablePath, args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.setExtraHTTPHeaders({ Authorization: `Bearer ${token}` });
  const response = await page.goto(url, { waitUntil: "load" });
  if (!response || response.status() !== 200) {
    throw new Error(`dashboard answered ${response && response.status()}`);
  }
  await page.screenshot({ path: out, fullPage: true });
  const text = async (selector) => (await page.textContent(selector)).trim();
  console.log(JSON.stringify({
    title: await page.title(),
    total: await text("#total"),
    denied: await text("#denied"),
    open: await text("#open"),
    bars: await page.locator("svg rect").count(),
  }));
} finally {
  await browser.close();
}
