// The text of a collection's chunks: working objects under `_gc/runs/<id>/` (storage/gc-store.ts)
// that carry what one batch found to the phases of later batches, one entry a line.
//
//   candidates-<gen>.<n>            old paths not live in the first look, one path line each
//   garbage-candidates-<gen>.<n>    those of them still not live at its end (compact)
//   files-<gen>.<n>                 unused NARs and orphaned listings, one file line each
//   draft-<gen>.<n>                 the fence built so far (announce): two lines of packed keys
//
// A path line is `<hash32>\t<name>\t<fileSize>\t<narSize>`, unknowns empty; a file line is
// `<key>\t<size>`, the key a NAR's (`nar/<file>`) or a listing's (`<hash32>.ls`).
// The mark sets (`marks-<slot>`) are binary KeySets (gc/key-set.ts, gc/mark-sets.ts), not chunks.

import { HASH_PART_LENGTH } from "../nix/store-path.ts";
import { NAR_PREFIX } from "../storage/keys.ts";
import { NAR_FILE_HASH_LENGTH } from "./fence.ts";
import type { FoundFile, FoundPath } from "./progress.ts";

/** A path of a candidate or garbage chunk. */
export interface PathLine extends FoundPath {
  narSize: number | null;
}

export function formatPathLine(path: PathLine): string {
  return `${path.hash}\t${path.name ?? ""}\t${path.fileSize ?? ""}\t${path.narSize ?? ""}`;
}

export function parsePathLine(line: string): PathLine {
  const [hash = "", name = "", fs = "", ns = ""] = line.split("\t");
  return { hash, name: name === "" ? null : name, fileSize: fs === "" ? null : Number(fs), narSize: ns === "" ? null : Number(ns) };
}

/** The hash part a path line starts with (no need to parse the rest). */
export function pathLineHash(line: string): string {
  return line.slice(0, HASH_PART_LENGTH);
}

export function formatFileLine(file: FoundFile): string {
  return `${file.key}\t${file.size}`;
}

export function parseFileLine(line: string): FoundFile {
  const [key = "", size = "0"] = line.split("\t");
  return { key, size: Number(size) };
}

/** The file hash of a file line that names a NAR; null for a listing's line. */
export function fileLineNarHash(line: string): string | null {
  return line.startsWith(NAR_PREFIX) ? line.slice(NAR_PREFIX.length, NAR_PREFIX.length + NAR_FILE_HASH_LENGTH) : null;
}

/** A chunk's text from its lines. */
export function formatChunk(lines: readonly string[]): string {
  return lines.join("\n");
}

/** A chunk's lines (none for an empty chunk). */
export function chunkLines(text: string): string[] {
  return text === "" ? [] : text.split("\n");
}

/** The fence being built: packed hash parts and packed NAR file hashes (gc/packed-keys.ts). */
export interface FenceDraft {
  paths: string;
  nars: string;
}

export function formatDraft(draft: FenceDraft): string {
  return `${draft.paths}\n${draft.nars}`;
}

export function parseDraft(text: string): FenceDraft {
  const [paths = "", nars = ""] = text.split("\n");
  return { paths, nars };
}
