// Screenshots of the shipped workflows in ComfyUI's real frontend (headless Debian Chromium driven
// by playwright-core). Called by scripts/comfyui_screenshots.py, which starts the server:
//     node comfyui_screenshots.mjs SERVER UI_DIR SMALL_DIR OUT_DIR NAME[,NAME...]
//     node comfyui_screenshots.mjs SERVER templates OUT_DIR
// For each workflow: drop UI_DIR/NAME.json onto the canvas as a user does (a drop event carrying
// the file), wait for the Load Image previews, save OUT_DIR/NAME.png; then queue
// SMALL_DIR/NAME.small.json under the page's client id (so the outputs show on the canvas as after a
// run from the UI) and save OUT_DIR/NAME.after_run.png. Last, the Templates panel, opened on this
// pack's cards: OUT_DIR/templates.png. Prints one JSON line per picture (the view and the canvas size).
import { chromium } from 'playwright-core';
import fs from 'fs';
import path from 'path';

const [server, ...rest] = process.argv.slice(2);
const templatesOnly = rest[0] === 'templates';
const [uiDir, smallDir, outDir, namesArg] = templatesOnly ? [null, null, rest[1], ''] : rest;
const names = templatesOnly ? [] : namesArg.split(',');
const VIEW = { width: 1920, height: 960 };
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

async function openPage() {
  const page = await browser.newPage({ viewport: VIEW });
  page.setDefaultTimeout(120000);
  await page.goto(server, { timeout: 240000, waitUntil: 'domcontentloaded' });
  await page.waitForFunction(() => window.app && window.app.graph && window.LiteGraph && window.app.api,
                             null, { timeout: 240000 });
  await page.waitForTimeout(2000);
  return page;
}

async function drop(page, file, mime) {
  const bytes = fs.readFileSync(file).toString('base64');
  const dataTransfer = await page.evaluateHandle(([b64, name, type]) => {
    const raw = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([raw], name, { type }));
    return dt;
  }, [bytes, path.basename(file), mime]);
  await page.dispatchEvent('#graph-canvas', 'drop', { dataTransfer });
  await page.waitForFunction(() => window.app.graph.nodes.length > 0 &&
    window.app.graph.nodes.filter((n) => n.type === 'LoadImage')
      .every((n) => (n.imgs || []).some((i) => i.complete && i.naturalWidth > 0)), null, { timeout: 60000 });
  await page.mouse.move(VIEW.width - 5, VIEW.height / 2);  // no hover highlight on the graph
  await page.waitForTimeout(1500);
}

async function shoot(page, file) {
  const view = await page.evaluate(() => ({ scale: app.canvas.ds.scale, offset: [...app.canvas.ds.offset] }));
  await page.screenshot({ path: file });
  console.log(JSON.stringify({ file, ...view, width: VIEW.width, height: VIEW.height }));
}

async function runSmall(page, name) {
  const small = path.join(smallDir, `${name}.small.json`);
  if (!fs.existsSync(small)) return false;
  const prompt = JSON.parse(fs.readFileSync(small, 'utf8'));
  const clientId = await page.evaluate(() => app.api.clientId);
  const r = await fetch(`${server}/prompt`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
                                             body: JSON.stringify({ prompt, client_id: clientId }) });
  const body = await r.json();
  if (r.status !== 200) throw new Error(`${name}: POST /prompt gave ${r.status}: ${JSON.stringify(body)}`);
  const end = Date.now() + 900000;
  let entry;
  for (;;) {
    const h = await (await fetch(`${server}/history/${body.prompt_id}`)).json();
    entry = h[body.prompt_id];
    if (entry && entry.status && entry.status.completed) break;
    if ((entry && entry.status && entry.status.status_str === 'error') || Date.now() > end) {
      throw new Error(`${name}: the run failed: ${JSON.stringify(h).slice(0, 2000)}`);
    }
    await new Promise((res) => setTimeout(res, 1000));
  }
  const outputs = Object.entries(entry.outputs).filter(([, v]) => v.images).map(([k]) => Number(k));
  await page.waitForFunction((ids) => ids.every((id) => (app.graph.getNodeById(id).imgs || [])
    .some((i) => i.complete && i.naturalWidth > 0)), outputs, { timeout: 60000 });
  await page.waitForTimeout(1500);
  return true;
}

try {
  for (const name of names) {
    const page = await openPage();
    await drop(page, path.join(uiDir, `${name}.json`), 'application/json');
    await shoot(page, path.join(outDir, `${name}.png`));
    if (await runSmall(page, name)) await shoot(page, path.join(outDir, `${name}.after_run.png`));
    await page.close();
  }
  if (templatesOnly) {  // the sidebar's Templates button, then this pack under Extensions
    const page = await openPage();
    await page.getByRole('button', { name: /templates/i }).first().click();
    await page.getByText('ComfyUI-InstructGIE', { exact: true }).first().click();
    await page.waitForFunction(() => [...document.querySelectorAll('img')]
      .filter((i) => i.src.includes('/workflow_templates/')).every((i) => i.complete && i.naturalWidth > 0));
    await page.waitForTimeout(2000);
    await shoot(page, path.join(outDir, 'templates.png'));
    await page.close();
  }
} finally {
  await browser.close();
}
