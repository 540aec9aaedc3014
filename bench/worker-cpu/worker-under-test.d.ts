// The two names bench/worker-cpu/entry.ts gets from the bench's build (bench/worker-cpu.ts):
// the real Worker, which wrangler's `build.alias` maps to src/index.ts, and the sampling
// interval, a `build.define` constant. Declared here so that the entry typechecks with the
// other bench files (uploader/tsconfig.json, Node types) without pulling the Worker's
// sources, typed against the Workers runtime, into that program.

declare module "nix-edge-cache-worker-under-test" {
  /** src/index.ts's default export, as much of it as the entry uses. */
  const worker: {
    fetch(request: Request, env: object, ctx: unknown): Response | Promise<Response>;
    scheduled?(controller: unknown, env: object, ctx: unknown): unknown;
  };
  export default worker;
}

/** V8 CPU profiler sampling interval in µs, chosen by the bench (--interval-us). */
declare const __BENCH_SAMPLING_INTERVAL_US__: number;
