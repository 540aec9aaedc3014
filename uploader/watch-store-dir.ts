// Noticing new store paths as Nix makes them valid, by watching the store directory.
//
// While Nix builds, substitutes or adds a path it holds a lock file next to it,
// `<store>/<hash>-<name>.lock`, and it deletes that file only after the path is
// registered as valid in its database. So the removal of a `.lock` file names a path that
// has just become valid (or, after a failed build or a garbage collection, one that is not:
// the pusher checks validity before anything else). cachix `watch-store` and attic
// `watch-store` rely on the same signal. The store directory is watched non-recursively
// (inotify on Linux, one watch for the whole store), so this costs nothing while nothing
// happens. Derivations (`.drv`) are left out: they are build recipes, not build results,
// and their closures are the sources of the build.
import { watch, type FSWatcher } from "node:fs";
import { lstat } from "node:fs/promises";
import { join } from "node:path";
import { parseStorePathBaseName } from "../src/nix/store-path.ts";
import { EXIT_LOCAL, UploaderError, messageOf } from "./errors.ts";

const LOCK_SUFFIX = ".lock";

/** The store directory cannot be watched. */
export class StoreWatchError extends UploaderError {
  constructor(message: string, hint?: string, options?: ErrorOptions) {
    super(message, EXIT_LOCAL, hint, options);
  }
}

/**
 * The store path base name a lock file's name stands for, or null when the name is not a
 * store path's lock file or the path is a derivation.
 */
export function lockedPathName(fileName: string): string | null {
  if (!fileName.endsWith(LOCK_SUFFIX)) return null;
  const base = fileName.slice(0, -LOCK_SUFFIX.length);
  if (base.endsWith(".drv")) return null;
  return parseStorePathBaseName(base) ? base : null;
}

/**
 * Calls `onPath` with `<storeDir>/<base>` each time a store path's lock file disappears.
 * Returns the watcher; close it to stop. `onError` gets errors of the watch itself.
 */
export function watchStoreDir(storeDir: string, onPath: (path: string) => void, onError: (err: StoreWatchError) => void): FSWatcher {
  let watcher: FSWatcher;
  try {
    // Node reports both creation and removal as "rename"; whether the lock file is still
    // there tells them apart (a lock created and removed before the check counts once).
    watcher = watch(storeDir, { persistent: true }, (event, fileName) => {
      // A removal is a "rename"; "change" events (writes, attributes) say nothing new.
      if (event !== "rename") return;
      const name = fileName === null ? null : String(fileName);
      const base = name === null ? null : lockedPathName(name);
      if (base === null) return;
      lstat(join(storeDir, name!)).then(
        () => {},
        () => onPath(join(storeDir, base)),
      );
    });
  } catch (err) {
    throw describeWatchError(storeDir, err);
  }
  watcher.on("error", (err) => onError(describeWatchError(storeDir, err)));
  return watcher;
}

function describeWatchError(storeDir: string, err: unknown): StoreWatchError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === "ENOSPC") {
    return new StoreWatchError(
      `cannot watch ${storeDir}: the system's limit of inotify watches is reached`,
      "raise it (sysctl fs.inotify.max_user_watches=524288), or use --spool-only with post-build-hook",
      { cause: err },
    );
  }
  if (code === "ENOENT") {
    return new StoreWatchError(`cannot watch ${storeDir}: no such directory`, "is Nix installed? NIX_STORE_DIR names another store directory", { cause: err });
  }
  return new StoreWatchError(`cannot watch ${storeDir}: ${messageOf(err)}`, undefined, { cause: err });
}
