// Connects Playwright to an agentbox session over its cdp_url, fills the fixture's login
// form in the session's existing page and prints what the page says.
// Usage: node connect.mjs CDP_URL LOGIN_PAGE_URL
import { chromium } from "playwright-core";

const [cdpUrl, loginUrl] = process.argv.slice(2);
const browser = await chromium.connectOverCDP(cdpUrl);
const context = browser.contexts()[0];
const page = context.pages()[0];
await page.goto(loginUrl);
await page.fill("#u", "alice");
await page.fill("#p", "secret");
await page.click("button[type=submit]");
const text = await page.textContent("#out");
const pages = context.pages().length;
console.log(JSON.stringify({ text, pages, url: page.url() }));
await browser.close(); // disconnects; the session's browser stays
