// The landing page (`GET /`): one self-contained HTML document, no framework, no script, no
// external assets, that tells a visitor how to use this cache: its public keys, copy-paste
// configuration for nix.conf, a NixOS module and a flake's nixConfig, how to push, the
// statistics of the last garbage collection, retention, and the upstream caches it serves.
// Every value is HTML-escaped: the origin comes from the request's Host header.

import type { StatsView } from "./gc/stats.ts";

export interface LandingData {
  /** The URL clients use: the request's origin, e.g. `https://cache.example.org`. */
  origin: string;
  /** Public keys (`name:base64`) clients should trust, the signing key's first. */
  publicKeys: string[];
  priority: number;
  /** READ_TOKEN is set: clients need a netrc entry to read. */
  isPrivate: boolean;
  /** Caches whose paths this one serves through its own URL (aggregation). */
  aggregated: string[];
  /** Caches whose paths uploads may reference without storing them (UPSTREAM_CACHES). */
  referenced: string[];
  /** Retention in days, null when automatic collection is off. */
  retentionDays: number | null;
  stats: StatsView;
}

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

const UNITS = ["bytes", "KiB", "MiB", "GiB", "TiB"];

export function formatBytes(n: number): string {
  let value = n;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} bytes` : `${value.toFixed(1)} ${UNITS[unit]}`;
}

function date(ms: number): string {
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

/** A Nix list at `indent`: on one line for one item, one item per line for more. */
function nixList(items: readonly string[], indent: string): string {
  if (items.length <= 1) return `[ ${items.map((i) => `"${i}"`).join(" ")} ]`;
  return `[\n${items.map((i) => `${indent}  "${i}"\n`).join("")}${indent}]`;
}

/** The configuration snippets, as text (escaped when put into the page). */
export function snippets(data: LandingData): { nixConf: string; nixos: string; flake: string; netrc: string } {
  const keys = data.publicKeys;
  const host = new URL(data.origin).host;
  return {
    nixConf: `extra-substituters = ${data.origin}\nextra-trusted-public-keys = ${keys.join(" ")}\n`,
    nixos:
      `{\n  nix.settings = {\n    extra-substituters = [ "${data.origin}" ];\n` +
      `    extra-trusted-public-keys = ${nixList(keys, "    ")};\n  };\n}\n`,
    flake:
      `{\n  nixConfig = {\n    extra-substituters = [ "${data.origin}" ];\n` +
      `    extra-trusted-public-keys = ${nixList(keys, "    ")};\n  };\n}\n`,
    netrc: `machine ${host} login nix password <token>\n`,
  };
}

function pre(id: string, text: string): string {
  return `<pre id="${id}"><code>${escapeHtml(text)}</code></pre>`;
}

function statsSection(view: StatsView): string {
  const s = view.stats;
  const index = view.index;
  const running = view.running === null ? "" : `<p>A garbage collection is running (started ${escapeHtml(date(view.running.startedAt))}, ${escapeHtml(view.running.phase)}).</p>`;
  if (s === null && index === null) return `<p>Not counted yet: the first garbage collection counts them.</p>${running}`;
  const rows: Array<[string, string]> = [];
  // Paths and sizes from the D1 index (recent) when there is one; NAR files from collections.
  if (index !== null) {
    rows.push(["Store paths", index.paths.toLocaleString("en")], ["Saved by compression", formatBytes(Math.max(0, index.narBytes - index.fileBytes))]);
  } else if (s !== null) {
    rows.push(["Store paths", s.paths.toLocaleString("en")], ["Saved by compression", formatBytes(s.savedBytes)]);
  }
  if (s !== null) rows.splice(1, 0, ["NAR files stored", `${s.narFiles.toLocaleString("en")} (${formatBytes(s.narBytes)})`]);
  const last = s?.lastGc ?? null;
  if (last !== null) {
    rows.push([
      "Last garbage collection",
      `${date(last.finishedAt)}: ${last.deletedPaths.toLocaleString("en")} paths and ${last.deletedNars.toLocaleString("en")} NARs deleted, ${formatBytes(last.freedBytes)} freed`,
    ]);
  }
  const table = rows.map(([k, v]) => `<tr><th scope="row">${escapeHtml(k)}</th><td>${escapeHtml(v)}</td></tr>`).join("");
  const counted = index?.countedAt ?? s?.countedAt ?? null;
  return `<table id="stats">${table}</table>${counted === null ? "" : `<p class="note">Counted ${escapeHtml(date(counted))}.</p>`}${running}`;
}

function list(items: readonly string[], empty: string): string {
  if (items.length === 0) return `<p>${escapeHtml(empty)}</p>`;
  return `<ul>${items.map((i) => `<li><code>${escapeHtml(i)}</code></li>`).join("")}</ul>`;
}

const STYLE = `
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:52rem;margin:0 auto;padding:2rem 1.25rem 4rem}
h1{font-size:1.8rem;margin:0 0 .25rem;word-break:break-all}
h2{font-size:1.2rem;margin:2rem 0 .5rem;border-bottom:1px solid #d6dae1;padding-bottom:.25rem}
h3{font-size:1rem;margin:1.25rem 0 .4rem}
.lead{color:#4a5366;margin:0}
pre{background:#1d2330;color:#e8ecf3;padding:.8rem 1rem;border-radius:6px;overflow-x:auto;font-size:.85rem;line-height:1.45}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
pre code{white-space:pre-wrap;overflow-wrap:anywhere;word-break:normal}
table{border-collapse:collapse}th,td{text-align:left;padding:.3rem 1.25rem .3rem 0;vertical-align:top}
th{font-weight:600;color:#4a5366}
.note{color:#5d6678;font-size:.9rem}
ul{padding-left:1.2rem}
`;

export function renderLandingPage(data: LandingData): string {
  const host = new URL(data.origin).host;
  const s = snippets(data);
  const keys =
    data.publicKeys.length === 0
      ? `<p>This cache has no signing key configured and trusts no key: Nix will refuse its paths unless they carry signatures you trust.</p>`
      : `<ul id="keys">${data.publicKeys.map((k) => `<li><code>${escapeHtml(k)}</code></li>`).join("")}</ul>`;
  const privateNote = data.isPrivate
    ? `<h3>Private cache</h3><p>Reads need a token. Give it to Nix as the password of a netrc entry (<code>/etc/nix/netrc</code>, or the file named by the <code>netrc-file</code> setting):</p>${pre("netrc", s.netrc)}`
    : "";
  const retention =
    data.retentionDays === null
      ? "Paths are kept until an administrator collects garbage."
      : `Paths are kept for ${data.retentionDays} days after they were last pushed, for as long as a kept path references them, and while pinned; a push of a path that is already here counts as a push.`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escapeHtml(host)} · Nix binary cache</title>
<style>${STYLE}</style>
</head>
<body>
<main>
<h1 id="name">${escapeHtml(host)}</h1>
<p class="lead">A Nix binary cache at <code id="url">${escapeHtml(data.origin)}</code> (priority ${data.priority}).</p>

<h2>Public keys</h2>
${keys}

<h2>Use this cache</h2>
<h3><code>nix.conf</code></h3>
<p class="note"><code>/etc/nix/nix.conf</code>, or <code>~/.config/nix/nix.conf</code> for a trusted user.</p>
${pre("nix-conf", s.nixConf)}
<h3>NixOS</h3>
${pre("nixos", s.nixos)}
<h3>A flake's <code>nixConfig</code></h3>
<p class="note">Nix asks users to accept it, or applies it for trusted users.</p>
${pre("flake", s.flake)}
${privateNote}

<h2>Push</h2>
<p>With the uploader (compresses, signs and uploads whole closures; a write token in <code>NIX_CACHE_TOKEN</code>):</p>
${pre("push-uploader", `npx uploader push ./result --cache ${data.origin}\n`)}
<p>With plain Nix (the write token as the password of a netrc entry for <code>${escapeHtml(host)}</code>):</p>
${pre("push-nix", `nix copy --extra-experimental-features nix-command --to '${data.origin}?compression=zstd' ./result\n`)}
<p class="note" id="push-nix-note">Nix keeps each narinfo it uploads, without this cache's signature, in its narinfo cache for 30 days, so the machine that pushed refuses those paths as unsigned. Substitute them there with <code>--option narinfo-cache-positive-ttl 0</code>, push with the uploader, or sign as you push (<code>&amp;secret-key=…</code>) with a key that machine trusts.</p>

<h2>Statistics</h2>
${statsSection(data.stats)}

<h2>Retention</h2>
<p>${escapeHtml(retention)}</p>

<h2>Upstream caches</h2>
<h3>Served through this cache</h3>
${list(data.aggregated, "None: this cache serves only its own paths.")}
<h3>Referenced, not stored</h3>
<p class="note">Paths here may depend on paths these caches serve: keep them among your substituters (cache.nixos.org is there by default).</p>
${list(data.referenced, "None: every reference of a path here is stored here too.")}
</main>
</body>
</html>
`;
}
