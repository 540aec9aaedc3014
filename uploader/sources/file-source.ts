// A binary cache directory (`file:///dir`), as `nix copy --to file:///dir` writes it.
import { open, readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { messageOf } from "../errors.ts";
import { READ_CHUNK_BYTES } from "../nar-writer.ts";
import { MAX_SOURCE_NARINFO_BYTES, NARINFO_FILE, SourceError, readBounded, relativeNarPath, type CacheSource } from "./cache-source.ts";

export class FileSource implements CacheSource {
  readonly name: string;
  readonly #dir: string;

  constructor(url: URL) {
    this.name = String(url);
    this.#dir = decodeURIComponent(url.pathname);
  }

  /** Checks the directory exists, so a typo fails before anything else. */
  async check(): Promise<void> {
    let isDir = false;
    try {
      isDir = (await stat(this.#dir)).isDirectory();
    } catch (err) {
      throw new SourceError(`${this.name}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "no such directory" : messageOf(err)}`);
    }
    if (!isDir) throw new SourceError(`${this.name}: not a directory`, "a file:// source is a binary cache directory; give an export stream as a plain file name");
  }

  cacheInfo(): Promise<string | null> {
    return this.#readSmall("nix-cache-info");
  }

  narInfo(hashPart: string): Promise<string | null> {
    return this.#readSmall(`${hashPart}.narinfo`);
  }

  async openFile(url: string): Promise<Readable> {
    const rel = relativeNarPath(url);
    if (rel === null) throw new SourceError(`${this.name}: the NAR URL ${JSON.stringify(url)} points outside the cache`);
    const path = join(this.#dir, rel);
    // Opened first, so that a missing file is this error and not a stream error later.
    let handle;
    try {
      handle = await open(path, "r");
    } catch (err) {
      throw new SourceError(`${this.name}: cannot read ${rel}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : messageOf(err)}`);
    }
    // The stream owns the handle and closes it: a bare descriptor (fd: handle.fd) would be
    // closed twice, once by the stream and once when the handle is garbage-collected (EBADF).
    return handle.createReadStream({ highWaterMark: READ_CHUNK_BYTES, autoClose: true });
  }

  async *listNarInfos(): AsyncIterable<string> {
    let names: string[];
    try {
      names = await readdir(this.#dir);
    } catch (err) {
      throw new SourceError(`${this.name}: cannot list the directory: ${messageOf(err)}`);
    }
    for (const name of names.sort()) {
      const m = NARINFO_FILE.exec(name);
      if (m) yield m[1]!;
    }
  }

  close(): void {}

  async #readSmall(name: string): Promise<string | null> {
    let handle;
    try {
      handle = await open(join(this.#dir, name), "r");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
      throw new SourceError(`${this.name}: cannot read ${name}: ${messageOf(err)}`);
    }
    try {
      return await readBounded(handle.createReadStream({ autoClose: false }), MAX_SOURCE_NARINFO_BYTES, `${this.name}/${name}`);
    } finally {
      await handle.close();
    }
  }
}
