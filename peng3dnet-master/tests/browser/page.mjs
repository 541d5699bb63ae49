// Drives the master's web page in headless Chromium (Debian's, through playwright-core):
//   node page.mjs URL SCREENSHOT.png NAME...
// The page must list the servers NAME..., sort by name both ways, filter by a word; then
// this script prints `STOP ADDRESS` and waits for a line on stdin (the test stops that
// server), and the row must turn down without a reload. Prints `OK` at the end; any
// failure exits 1 with the reason.
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const [url, shot, ...names] = process.argv.slice(2);
const lines = createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve) => lines.once("line", resolve));
const fail = (why) => { console.error("FAIL: " + why); process.exit(1); };

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 700 } });
  let navigations = 0;
  page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations++; });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  const rows = () => page.$$eval("tbody tr", (trs) => trs.map((tr) => ({
    name: tr.querySelector("td.name").firstChild.textContent,
    address: tr.dataset.address,
    state: tr.className,
  })));
  await page.waitForFunction((n) => document.querySelectorAll("tbody tr").length === n, names.length, { timeout: 15000 })
    .catch(() => fail("the page did not list " + names.length + " servers"));

  const sorted = [...names].sort();
  // The page starts sorted by name, ascending; a click on Name reverses it.
  let shown = (await rows()).map((r) => r.name);
  if (JSON.stringify(shown) !== JSON.stringify(sorted)) fail("not sorted by name: " + shown);
  await page.click('th[data-key="name"]');
  shown = (await rows()).map((r) => r.name);
  if (JSON.stringify(shown) !== JSON.stringify([...sorted].reverse())) fail("not sorted by name, descending: " + shown);
  await page.click('th[data-key="name"]');

  // A word filters the rows.
  const word = sorted[1];
  await page.fill("#filter", word);
  shown = (await rows()).map((r) => r.name);
  if (JSON.stringify(shown) !== JSON.stringify([word])) fail(`filter ${word}: ${shown}`);
  await page.fill("#filter", "");

  // One server stops: its row turns down while the page stays loaded.
  const victim = (await rows())[0];
  if (victim.state !== "up") fail("the first server is not up: " + JSON.stringify(victim));
  console.log("STOP " + victim.address);
  await nextLine();
  await page.waitForSelector(`tr.down[data-address="${victim.address}"]`, { timeout: 20000 })
    .catch(() => fail(victim.address + " did not turn down on the page"));
  if (navigations !== 1) fail("the page was reloaded (" + navigations + " navigations)");
  if (errors.length) fail("script errors: " + errors.join("; "));
  await page.screenshot({ path: shot, fullPage: true });
  // And on a phone: cards, still readable.
  await page.setViewportSize({ width: 390, height: 800 });
  await page.screenshot({ path: shot.replace(/\.png$/, "-phone.png"), fullPage: true });
  console.log("OK");
} finally {
  await browser.close();
}
process.exit(0);
