// The store page end to end in headless Chromium (Debian's /usr/bin/chromium) against a real
// daemon. Started by tests/api/page.rs, which seeds the daemon, passes what to expect in the
// environment and publishes a movement over NATS when this script asks for it on stdout
// ("PUBLISH") and answers on stdin ("PUBLISHED"). Exits non-zero on the first failed check.
import { readFileSync, mkdirSync } from "node:fs";
import { createInterface } from "node:readline";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run through tests/api/page.rs)`);
  return v;
};
const URL_ = env("OMNISTOCK_URL");
const ADMIN_KEY = env("OMNISTOCK_ADMIN_KEY");
const READ_KEY = env("OMNISTOCK_READ_KEY");
const SKU = env("OMNISTOCK_SKU");
const HERE = env("OMNISTOCK_HERE");
const NEARBY = JSON.parse(env("OMNISTOCK_NEARBY")); // expected order of nearby store ids
const STALE = env("OMNISTOCK_STALE"); // a location whose last movement is past the red threshold
const SHOTS = process.env.OMNISTOCK_SCREENSHOTS || join(here, "../../target/screenshots");
const CHROMIUM = process.env.OMNISTOCK_CHROMIUM || "/usr/bin/chromium";
const TIMEOUT = 20000;

const log = (...a) => console.log("[page.mjs]", ...a);
function check(cond, what) {
  if (!cond) throw new Error("check failed: " + what);
  log("ok:", what);
}

// Lines from the Rust side, in order.
const stdin = createInterface({ input: process.stdin });
const lines = [];
let waiting = null;
stdin.on("line", (l) => (waiting ? (waiting(l), (waiting = null)) : lines.push(l)));
const nextLine = () =>
  new Promise((resolve, reject) => {
    if (lines.length) return resolve(lines.shift());
    waiting = resolve;
    setTimeout(() => reject(new Error("no answer from the test on stdin")), TIMEOUT);
  });

const axeSource = readFileSync(join(here, "node_modules/axe-core/axe.min.js"), "utf8");
async function axe(page, view) {
  // Evaluated over the DevTools protocol, not as a page script, so the page's CSP stays on.
  await page.evaluate(axeSource + "\n;0");
  const result = await page.evaluate(() =>
    window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] } }),
  );
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  for (const v of bad) log(`axe ${view}: ${v.id} (${v.impact}): ${v.help}`, v.nodes.map((n) => n.target.join(" ")).join(" | "));
  check(bad.length === 0, `axe-core: no serious or critical violations on the ${view} view (${result.passes.length} rules passed)`);
}
const shot = (page, name) => page.screenshot({ path: join(SHOTS, name) });

let browser;
try {
  mkdirSync(SHOTS, { recursive: true });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
    // Playwright gives every launch a fresh, temporary --user-data-dir of its own.
  });
  const context = await browser.newContext({ viewport: { width: 1024, height: 768 }, locale: "en-US" });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const problems = [];
  page.on("console", (m) => {
    if (m.type() === "error" && !/status of (401|403|409)/.test(m.text())) problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(String(e)));
  // The key never goes into a URL.
  const urls = [];
  page.on("request", (r) => urls.push(r.url()));

  await page.goto(URL_ + "/");
  await page.waitForSelector("#key-input");
  check((await page.locator("html").getAttribute("lang")) === "en", "an English browser gets English");
  await shot(page, "1-key.png");
  await axe(page, "key");

  // A read-only key: lookups work, hold and order are disabled with the reason.
  await page.fill("#key-input", READ_KEY);
  await page.press("#key-input", "Enter");
  await page.waitForSelector("#sku-input:focus");
  await page.selectOption("#store-picker", HERE);
  await page.fill("#sku-input", SKU);
  await page.press("#sku-input", "Enter");
  await page.waitForSelector(`#nearby li[data-location="${NEARBY[0]}"]`);
  check(await page.locator("#nearby button[data-hold]").first().isDisabled(), "read-only key: hold buttons disabled");
  check(await page.locator("#deliver-form button").isDisabled(), "read-only key: delivery disabled");
  check((await page.textContent("#act-reason")).includes("only look up"), "read-only key: the reason is shown");
  await page.click("#sign-out");
  await page.waitForSelector("#key-input:visible");

  // Find: this store first, then nearby stores nearest first, with freshness.
  await page.fill("#key-input", ADMIN_KEY);
  await page.press("#key-input", "Enter");
  await page.waitForSelector("#sku-input:focus");
  check((await page.inputValue("#store-picker")) === HERE, "the tablet's store is remembered");
  await page.fill("#sku-input", SKU);
  await page.press("#sku-input", "Enter");
  await page.waitForSelector(`#nearby li[data-location="${NEARBY[0]}"]`);
  await page.waitForFunction(() => document.body.dataset.live === "on");
  const order = await page.locator("#nearby li").evaluateAll((els) => els.map((e) => e.dataset.location));
  check(JSON.stringify(order) === JSON.stringify(NEARBY), `nearby stores nearest first: ${order.join(", ")}`);
  check((await page.textContent("#here-available")) === "0", "this store is sold out");
  check(/last movement .* ago/.test(await page.textContent("#here-fresh")), "this store's number says how fresh it is");
  check(/last counted|never counted/.test(await page.textContent(`#nearby li[data-location="${NEARBY[0]}"] .fresh`)), "nearby numbers say how fresh they are");
  check((await page.locator("#map-stores circle.have").count()) >= NEARBY.length, "stores with stock are drawn on the map");
  await page.click("#history-button");
  await page.waitForSelector("#history-rows tr");
  check((await page.locator("#history-rows tr").count()) >= 2, "the movement history of this store explains the 0");
  await shot(page, "2-find.png");
  await axe(page, "find");

  // Hold one unit at the nearest store: its quantity drops.
  const first = `#nearby li[data-location="${NEARBY[0]}"]`;
  const before = Number(await page.textContent(`${first} .qty-available`));
  await page.click(`${first} button[data-hold]`);
  await page.waitForSelector("#hold-dialog[open]");
  await shot(page, "3-hold.png");
  await axe(page, "hold dialog");
  await page.fill("#hold-qty", "1");
  await page.fill("#hold-ref", "CUST-0912");
  await page.click("#hold-confirm");
  await page.waitForFunction(() => !document.querySelector("#hold-dialog").open);
  await page.waitForFunction(
    ([sel, want]) => document.querySelector(sel)?.textContent === String(want),
    [`${first} .qty-available`, before - 1],
  );
  check(true, `holding one unit drops ${NEARBY[0]} from ${before} to ${before - 1}`);
  check((await page.textContent("#flash")).includes("CUST-0912"), "the hold is confirmed with the customer's reference");

  // A movement published over NATS updates the page without a reload.
  await page.evaluate(() => (window.__notReloaded = true));
  const hereBefore = Number(await page.textContent("#here-available"));
  console.log(`PUBLISH ${HERE} ${SKU}`);
  check((await nextLine()) === "PUBLISHED", "the test published a receipt of 5 over NATS");
  await page.waitForFunction((want) => document.querySelector("#here-available")?.textContent === String(want), hereBefore + 5);
  check(await page.evaluate(() => window.__notReloaded === true), `the receipt shows (${hereBefore} → ${hereBefore + 5}) without a reload`);

  // Order a home delivery (endless aisle) and read the explanation.
  await page.selectOption("#deliver-city", { label: "Taipei" });
  await page.fill("#deliver-qty", "1");
  await page.fill("#deliver-ref", "CUST-0913");
  await page.click("#deliver-form button[type=submit]");
  await page.waitForSelector("#route-head");
  const head = await page.textContent("#route-head");
  check(/^Arranged: ships from /.test(head), `delivery routed: ${head}`);
  check((await page.locator("#route-result .explanation li.chosen").count()) >= 1, "the explanation names the chosen location");
  check((await page.locator("#route-result .explanation li").count()) >= 2, "the explanation lists the locations considered");
  await page.locator("#route-result").scrollIntoViewIfNeeded();
  await shot(page, "4-route.png");

  // Holds: extend and release.
  await page.click('.tab[data-view="holds"]');
  await page.waitForSelector("#holds-rows tr");
  const holdRow = page.locator("#holds-rows tr", { hasText: "CUST-0912" });
  check((await holdRow.count()) === 1, "the hold is listed with its customer reference");
  await shot(page, "5-holds.png");
  await axe(page, "holds");
  await holdRow.locator("button[data-extend]").click();
  await page.waitForFunction(() => /Extended/.test(document.querySelector("#flash")?.textContent || ""));
  await holdRow.locator("button[data-release]").click();
  await page.waitForFunction(() => /Released/.test(document.querySelector("#flash")?.textContent || ""));
  await page.waitForFunction(() => ![...document.querySelectorAll("#holds-rows tr")].some((r) => r.textContent.includes("CUST-0912")));
  check(true, "a hold can be extended and released");

  // Ops: the stale location is red on its sync delay, against thresholds shown on the page.
  await page.click('.tab[data-view="ops"]');
  await page.waitForSelector(`#ops-rows tr[data-location="${STALE}"]`);
  const staleRow = page.locator(`#ops-rows tr[data-location="${STALE}"]`);
  check((await staleRow.getAttribute("data-light")) === "red", `${STALE} is red`);
  check((await staleRow.locator("td.m").first().getAttribute("class")).includes("red"), `${STALE}'s sync delay is what is red`);
  check((await page.locator(`#ops-rows tr[data-location="${HERE}"] td.m`).first().getAttribute("class")).includes("green"), `${HERE}'s sync delay is green`);
  check(/Since last movement: 10 min \/ 30 min/.test(await page.textContent("#ops-thresholds")), "the thresholds are shown");
  await shot(page, "6-ops.png");
  await axe(page, "ops");

  // Language: switch to Traditional Chinese and back.
  await page.selectOption("#lang", "zh-TW");
  check((await page.locator("html").getAttribute("lang")) === "zh-TW", "the page is now zh-TW");
  check((await page.textContent('.tab[data-view="find"]')) === "查詢", "tabs are in Chinese");
  check((await page.textContent(`#ops-rows tr[data-location="${STALE}"] .light`)) === "異常", "the lights are in Chinese");
  await shot(page, "7-ops-zh-TW.png");
  await page.click('.tab[data-view="find"]');
  await shot(page, "8-find-zh-TW.png");
  await axe(page, "find (zh-TW)");
  await page.selectOption("#lang", "en");
  check((await page.textContent('.tab[data-view="find"]')) === "Find", "and back to English");

  // A Chinese browser starts in Chinese; the key stays for the session, not in any URL.
  const zh = await browser.newContext({ viewport: { width: 1024, height: 768 }, locale: "zh-TW" });
  const zhPage = await zh.newPage();
  await zhPage.goto(URL_ + "/");
  await zhPage.waitForSelector("#key-input");
  check((await zhPage.locator("html").getAttribute("lang")) === "zh-TW", "a zh-TW browser gets Chinese first");
  await zh.close();
  check(!urls.some((u) => u.includes(ADMIN_KEY) || u.includes(READ_KEY)), "no API key in any URL");
  check(urls.some((u) => u.includes("/v1/stream?") && u.includes("token=")), "the live stream was opened with a token");
  check(problems.length === 0, "no script errors or CSP refusals: " + problems.join(" | "));
  log("all checks passed");
} catch (e) {
  console.error("[page.mjs] FAILED:", e && e.stack ? e.stack : e);
  process.exitCode = 1;
} finally {
  if (browser) await browser.close().catch(() => {});
  stdin.close();
}
