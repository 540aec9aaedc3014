// V8's CPU profiler inside the isolate, for bench/worker-cpu/entry.ts. It is a module of its
// own, imported before the Worker, so that it starts before the Worker's modules are
// evaluated: a fresh isolate's profile then covers the whole module evaluation too.
//
// A `node:inspector` Session normally throws in workerd; with the experimental, local-only
// compatibility flag `enable_nodejs_inspector_local_dev` (miniflare runs workerd with
// --experimental) it connects to the isolate's own V8 inspector. Profiles are Chrome
// .cpuprofile objects: nodes, samples, timeDeltas, startTime/endTime in µs of V8's
// monotonic clock.

import { Session } from "node:inspector";

let session: Session | null = null;
/** Why the profiler is not running, or null. */
let failure: string | null = null;

function post(method: string, params: object = {}): Promise<unknown> {
  return new Promise((resolve, reject) => {
    if (session === null) return reject(new Error("no inspector session"));
    session.post(method, params, (err: Error | null, result?: object) => (err ? reject(err) : resolve(result)));
  });
}

function noteError(err: unknown): void {
  failure ??= err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

/** Starts a profile (the sampling interval is the bench's build constant). */
export function startProfiler(): void {
  if (failure !== null) return;
  post("Profiler.setSamplingInterval", { interval: __BENCH_SAMPLING_INTERVAL_US__ }).catch(noteError);
  post("Profiler.start").catch(noteError);
}

/** Stops the running profile and returns it; null (with profilerError set) when profiling failed. */
export async function stopProfiler(): Promise<unknown> {
  if (failure !== null) return null;
  try {
    return ((await post("Profiler.stop")) as { profile: unknown }).profile;
  } catch (err) {
    noteError(err);
    return null;
  }
}

/** Why profiling does not work, or null. */
export function profilerError(): string | null {
  return failure;
}

try {
  // Without the flag, workerd's Session constructor throws: the Worker still runs, and the
  // bench reports the kernel's CPU per request instead.
  session = new Session();
  session.connect();
  post("Profiler.enable").catch(noteError);
  startProfiler();
} catch (err) {
  noteError(err);
}
