// Benchmark: the floor under `uploader push` of a large NAR to the local Worker. The same
// bytes a 1 GiB half-random path compresses to (512 MiB of random bytes by default) are
// sent to a trivial Worker under the same `wrangler dev` machinery (wrangler's proxy,
// workerd, local R2 in miniflare), which does nothing but the one step measured:
//
//   drain          workerd reads the request body and throws it away (no R2 at all)
//   R2 put         the body streamed into one R2 put
//   R2 put sha256  the same, R2 checking the sha256 (what the Worker's NAR PUT does)
//   parts          a multipart upload: 64 MiB parts, four at a time (as the uploader sends)
//   complete       R2 assembling the parts
//   copy, sha256   the assembled object read back and put under a new key with its sha256
//                  checked: what the Worker's completion of a multipart NAR does
//
// None of it is the uploader's or the product Worker's code: it is what local R2 and
// workerd cost on this machine for these bytes, to hold `bench/push-large.ts` against.
// Against Cloudflare, R2's side of this runs on Cloudflare's machines.
//
// Usage: node bench/push-large-floor.ts [--mib N]   (default 512)
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, open, rm, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { unstable_startWorker } from "wrangler";

const DEFAULT_MIB = 512;
const PART_BYTES = 64 << 20;
const PART_CONCURRENCY = 4;

const WORKER = `export default { async fetch(req, env) {
  const u = new URL(req.url); const q = u.searchParams;
  if (u.pathname === "/drain") { let n = 0; for await (const c of req.body) n += c.length; return new Response(String(n)); }
  if (u.pathname === "/put") { await env.B.put(q.get("key"), req.body, q.get("sha") ? { sha256: q.get("sha") } : {}); return new Response("ok"); }
  if (u.pathname === "/mp/start") { const m = await env.B.createMultipartUpload(q.get("key")); return new Response(m.uploadId); }
  if (u.pathname === "/mp/part") { const m = env.B.resumeMultipartUpload(q.get("key"), q.get("id")); return Response.json(await m.uploadPart(Number(q.get("n")), req.body)); }
  if (u.pathname === "/mp/complete") { const m = env.B.resumeMultipartUpload(q.get("key"), q.get("id")); await m.complete(await req.json()); return new Response("ok"); }
  if (u.pathname === "/copy") { const o = await env.B.get(q.get("from")); await env.B.put(q.get("to"), o.body, { sha256: q.get("sha") }); return new Response("ok"); }
  return new Response("not found", { status: 404 });
} }
`;

const { values } = parseArgs({ options: { mib: { type: "string" } } });
const mib = values.mib ? Number(values.mib) : DEFAULT_MIB;
const size = mib << 20;
const dir = await mkdtemp(join(tmpdir(), "nec-bench-floor-"));
process.env.WRANGLER_LOG ??= "warn";
try {
  const file = join(dir, "data");
  const hash = createHash("sha256");
  const fh = await open(file, "w");
  for (let written = 0; written < size; written += 8 << 20) {
    const block = randomBytes(Math.min(8 << 20, size - written));
    hash.update(block);
    await fh.write(block);
  }
  await fh.close();
  const sha = hash.digest("hex");
  await writeFile(join(dir, "worker.js"), WORKER);
  await writeFile(join(dir, "wrangler.toml"), `name = "floor"\nmain = "worker.js"\ncompatibility_date = "2025-01-01"\n[[r2_buckets]]\nbinding = "B"\nbucket_name = "floor-bucket"\n`);
  const worker = await unstable_startWorker({
    config: join(dir, "wrangler.toml"),
    dev: { server: { hostname: "127.0.0.1", port: 0 }, inspector: false, persist: join(dir, "state") as unknown as boolean, watch: false },
  });
  await worker.ready;
  const base = String(await worker.url);

  const send = (method: string, path: string, body?: { start: number; length: number } | Buffer): Promise<string> =>
    new Promise((resolve, reject) => {
      const length = body === undefined ? 0 : Buffer.isBuffer(body) ? body.length : body.length;
      const req = request(new URL(path, base), { method, headers: { "content-length": String(length) } }, (res) => {
        let text = "";
        res.on("data", (c: Buffer) => (text += c.toString()));
        res.on("end", () => (res.statusCode === 200 ? resolve(text) : reject(new Error(`${method} ${path}: ${res.statusCode} ${text}`))));
      });
      req.on("error", reject);
      if (body === undefined) req.end();
      else if (Buffer.isBuffer(body)) req.end(body);
      else createReadStream(file, { start: body.start, end: body.start + body.length - 1, highWaterMark: 1 << 20 }).pipe(req);
    });
  const timed = async (label: string, fn: () => Promise<unknown>): Promise<void> => {
    const start = performance.now();
    await fn();
    const s = (performance.now() - start) / 1000;
    console.log(`${label.padEnd(48)} ${s.toFixed(2).padStart(7)} s ${(mib / s).toFixed(1).padStart(7)} MiB/s`);
  };

  console.log(`${mib} MiB of random bytes; ${cpus().length} cores, Node ${process.version}, load ${loadavg().map((l) => l.toFixed(1)).join(" ")}\n`);
  const whole = { start: 0, length: size };
  await timed("drain (workerd reads the body, no R2)", () => send("PUT", "/drain", whole));
  await timed("R2 put", () => send("PUT", "/put?key=plain", whole));
  await timed("R2 put, sha256 checked", () => send("PUT", `/put?key=checked&sha=${sha}`, whole));
  const count = Math.ceil(size / PART_BYTES);
  let id = "";
  const parts: unknown[] = [];
  await timed(`multipart: ${count} parts of 64 MiB, ${PART_CONCURRENCY} at a time`, async () => {
    id = encodeURIComponent(await send("POST", "/mp/start?key=assembled"));
    let next = 1;
    await Promise.all(
      Array.from({ length: PART_CONCURRENCY }, async () => {
        while (next <= count) {
          const n = next++;
          const start = (n - 1) * PART_BYTES;
          parts.push(JSON.parse(await send("PUT", `/mp/part?key=assembled&id=${id}&n=${n}`, { start, length: Math.min(PART_BYTES, size - start) })));
        }
      }),
    );
  });
  parts.sort((a, b) => (a as { partNumber: number }).partNumber - (b as { partNumber: number }).partNumber);
  await timed("multipart: complete", () => send("POST", `/mp/complete?key=assembled&id=${id}`, Buffer.from(JSON.stringify(parts))));
  await timed("copy of the assembled object, sha256 checked", () => send("POST", `/copy?from=assembled&to=copied&sha=${sha}`));
  console.log(`\nload at the end ${loadavg()[0]!.toFixed(1)}`);
  await worker.dispose();
} finally {
  await rm(dir, { recursive: true, force: true });
}
