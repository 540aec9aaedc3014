// The Worker's cron trigger (wrangler.toml [triggers]): every tick runs one bounded batch of
// garbage collection (gc/collector.ts), which continues the collection in progress or starts
// one when GC_INTERVAL_HOURS have passed since the last. An idle tick costs one R2 read.
// Every MULTIPART_CLEANUP_EVERY_MINUTES the tick instead runs a pass of the multipart cleanup
// (storage/multipart.ts): it aborts uploads started more than a day ago, 42 per pass,
// and deletes their objects and rows, so abandoned parts stop costing storage before R2's
// own seven-day expiry and every token's uploads are cleared in a bounded number of passes.
// An idle pass (no upload to abort) is one D1 query and no R2 call. While the D1 index is not complete
// (a bucket filled before it existed), the other ticks adopt one page of narinfos each
// instead of collecting (path-index/adoption.ts); once it is complete, the tick five
// minutes after each cleanup adopts a page, so objects a crash left unindexed are found
// too. Each job keeps a whole invocation's budget (the free plan's 50 subrequests) to itself;
// before it, the first tick of an isolate checks the bucket's nix-cache-info object (one
// read, a write when the settings changed it: storage/cache-info-object.ts).

import { settingsOf, type WorkerEnv } from "./env.ts";
import { runGcBatch } from "./gc/collector.ts";
import { adoptObjects, isIndexComplete } from "./path-index/adoption.ts";
import { bucketCacheInfoText } from "./routes/cache-info.ts";
import { keepCacheInfoObject } from "./storage/cache-info-object.ts";
import { abortStaleUploads } from "./storage/multipart.ts";

/**
 * Ticks whose minute is a multiple of this clean up multipart uploads instead of collecting
 * garbage. Ten minutes: six passes an hour clear about 250 abandoned uploads, so even every
 * token at its limit of 64 is cleared within hours; an idle pass costs one D1 query, which
 * reads the rows of the uploads in progress (144 passes a day: 14,400 rows read with 100
 * uploads in progress, against the free plan's five million), and collection keeps 90 % of
 * the ticks.
 */
export const MULTIPART_CLEANUP_EVERY_MINUTES = 10;

/** Once the index is complete, the tick this many minutes after each cleanup adopts a page. */
export const ADOPTION_MINUTE = 5;

export async function runScheduled(env: WorkerEnv, scheduledTime: number = Date.now()): Promise<void> {
  await keepCacheInfo(env);
  const minute = new Date(scheduledTime).getUTCMinutes() % MULTIPART_CLEANUP_EVERY_MINUTES;
  if (minute === 0) {
    await cleanUpMultipart(env, scheduledTime);
    return;
  }
  if (minute === ADOPTION_MINUTE || !(await indexComplete(env))) {
    await adopt(env, scheduledTime);
    return;
  }
  await collectGarbage(env);
}

/** The bucket's nix-cache-info object follows the settings (one read per isolate). */
async function keepCacheInfo(env: WorkerEnv): Promise<void> {
  try {
    await keepCacheInfoObject(env.CACHE, bucketCacheInfoText(settingsOf(env).priority));
  } catch (err) {
    console.error("scheduled: the nix-cache-info object was not checked", err);
  }
}

async function indexComplete(env: WorkerEnv): Promise<boolean> {
  try {
    return await isIndexComplete(env.DB);
  } catch (err) {
    console.error("scheduled: the D1 index cannot be read (are its migrations applied?)", err);
    return true;
  }
}

async function adopt(env: WorkerEnv, now: number): Promise<void> {
  try {
    const step = await adoptObjects(env.CACHE, env.DB, now);
    if (step.adopted > 0 || step.unreadable.length > 0) {
      console.log(`index: adopted ${step.adopted} narinfos, ${step.unreadable.length} unreadable${step.complete ? "; the pass is complete" : ""}`);
    }
  } catch (err) {
    console.error("index adoption failed; the next tick retries", err);
  }
}

async function cleanUpMultipart(env: WorkerEnv, now: number): Promise<void> {
  try {
    const pass = await abortStaleUploads({ bucket: env.CACHE, db: env.DB }, { now });
    if (pass.aborted.length > 0 || pass.strays > 0 || pass.more) {
      console.log(
        `multipart cleanup: aborted ${pass.aborted.length} abandoned uploads, deleted ${pass.strays} objects of the bookkeeping from before D1, ` +
          `${pass.operations} R2 and D1 operations${pass.more ? "; more in the next pass" : ""}`,
      );
    }
  } catch (err) {
    console.error("multipart cleanup failed; the next pass retries", err);
  }
}

async function collectGarbage(env: WorkerEnv): Promise<void> {
  let settings;
  try {
    settings = settingsOf(env);
  } catch (err) {
    console.error("scheduled: the Worker's settings are wrong; nothing collected", err);
    return;
  }
  let progress;
  try {
    progress = await runGcBatch({ bucket: env.CACHE, db: env.DB, settings: settings.gc, clock: Date.now }, { dryRun: false, trigger: "cron", onlyIfDue: true });
  } catch (err) {
    // The state in R2 is unchanged (or leased until the lease runs out): the next tick retries.
    // An index that cannot be read (D1 down, migrations not applied) fails every batch
    // before it deletes anything: retention then waits rather than guess push times.
    console.error("gc batch failed; the next tick retries", err);
    return;
  }
  if (progress.status === "idle") return;
  const t = progress.totals;
  console.log(
    `gc ${progress.run?.id ?? "-"}: ${progress.status}, phase ${progress.run?.phase ?? "-"}, ` +
      `${progress.batch.operations} R2 and D1 operations; listed ${t.listed}, garbage ${t.garbagePaths} paths / ${t.garbageNars} NARs, ` +
      `deleted ${t.deletedPaths} paths / ${t.deletedNars} NARs${t.unreadable > 0 ? `; ${t.unreadable} unreadable (nothing deleted)` : ""}`,
  );
  const result = progress.result;
  if (result?.unreadableCount) {
    // Retention failed safe: say which documents to fix, or every run keeps everything.
    const named = (result.unreadable ?? []).map((d) => `\n  ${d.path ?? d.key} (${d.key}): ${d.reason}`).join("");
    console.error(
      `gc ${result.runId}: deleted no narinfo and no NAR, because ${result.unreadableCount} documents it keeps cannot be read. ` +
        "Delete each narinfo from the bucket and push its path again; for _gc/pins.json, set the pins again (uploader pins, pin):" +
        named,
    );
  }
}
