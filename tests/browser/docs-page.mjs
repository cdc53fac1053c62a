// The docs page in a real browser, offline: Debian's Chromium (headless) loads GET /docs from
// the local gateway with every other origin unreachable, waits for Swagger UI to render the
// description, counts the operations it lists per tag, and saves a full-page screenshot.
//
//   node tests/browser/docs-page.mjs http://127.0.0.1:3000 docs/docs-page.png
//
// Prints one JSON line: {"operations": N, "tags": {"users": n, ...}, "blocked": [...], "errors": [...]}.
import { chromium } from "playwright-core";

const [base, screenshot] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error("usage: node docs-page.mjs BASE_URL SCREENSHOT.png");
  process.exit(2);
}
const origin = new URL(base).origin;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--metrics-recording-only",
    // Offline: no name resolves but this machine's.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
  ],
});
const blocked = [];
const errors = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  // Anything not from the gateway is refused (and reported): the page must need nothing else.
  await context.route("**/*", (route) => {
    const url = new URL(route.request().url());
    if (url.origin === origin || url.protocol === "data:") {
      return route.continue();
    }
    blocked.push(url.href);
    return route.abort();
  });
  const page = await context.newPage();
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  const response = await page.goto(`${base}/docs`, { waitUntil: "networkidle" });
  if (!response || response.status() !== 200) {
    throw new Error(`GET /docs answered ${response && response.status()}`);
  }
  await page.waitForSelector(".opblock", { timeout: 30000 });
  const tags = await page.$$eval(".opblock-tag-section", (sections) =>
    Object.fromEntries(
      sections.map((section) => [
        section.querySelector(".opblock-tag")?.getAttribute("data-tag") ?? "?",
        section.querySelectorAll(".opblock").length,
      ]),
    ),
  );
  const operations = Object.values(tags).reduce((a, b) => a + b, 0);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ operations, tags, blocked, errors }));
} finally {
  await browser.close();
}
