// Upstream binary caches for the aggregation tests: real HTTP servers on loopback.
//
// A good upstream serves a directory that `nix copy --to file://…` wrote, as any static
// file server would (GET and HEAD, 404 for anything absent), optionally only to clients
// presenting a token (HTTP Basic password, as Nix and this Worker send it). Broken ones
// misbehave the ways real upstreams do: "hang" accepts connections and never answers,
// "error" answers 500 to everything, "garbage" answers 200 with a body that is no narinfo,
// "wrong-path" answers every narinfo request with the same valid narinfo of another path.
// A serving upstream may also redirect chosen request paths (302, after the token check,
// as a private cache moving its objects would). Every server records the requests it
// got, with their Authorization header, so tests can tell who was asked what and who was
// sent credentials. fakeCachePath makes signed paths for such a directory without Nix.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { join, normalize, sep } from "node:path";
import { utf8 } from "../../src/nix/encoding.ts";
import { formatSha256, sha256 } from "../../src/nix/hash.ts";
import { serializeNar } from "../../src/nix/nar-writer.ts";
import { formatNarInfo, type NarInfo } from "../../src/nix/narinfo.ts";
import { encodeNix32 } from "../../src/nix/nix32.ts";
import { signNarInfo, withSignature, type SecretKey } from "../../src/nix/signature.ts";

export type UpstreamBehaviour =
  | { kind: "serve"; root: string; token?: string; redirects?: Record<string, string> }
  | { kind: "hang" }
  | { kind: "error" }
  | { kind: "garbage" }
  | { kind: "wrong-path"; narinfo: string };

export interface SeenRequest {
  method: string;
  path: string;
  authorization: string | undefined;
}

const CONTENT_TYPES: Record<string, string> = {
  ".narinfo": "text/x-nix-narinfo",
  "nix-cache-info": "text/x-nix-cache-info",
};

function contentTypeOf(path: string): string {
  for (const [suffix, type] of Object.entries(CONTENT_TYPES)) if (path.endsWith(suffix)) return type;
  return "application/x-nix-nar";
}

function authorised(req: IncomingMessage, token: string | undefined): boolean {
  if (token === undefined) return true;
  const header = req.headers.authorization ?? "";
  const m = /^Basic (.+)$/.exec(header);
  if (m === null) return false;
  const decoded = Buffer.from(m[1]!, "base64").toString("utf8");
  return decoded.slice(decoded.indexOf(":") + 1) === token;
}

async function serveFile(root: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname);
  const file = normalize(join(root, path));
  if (!file.startsWith(root + sep)) {
    res.writeHead(404).end();
    return;
  }
  let size: number;
  try {
    const s = await stat(file);
    if (!s.isFile()) throw new Error("not a file");
    size = s.size;
  } catch {
    res.writeHead(404, { "Content-Type": "text/plain" }).end("not found\n");
    return;
  }
  res.writeHead(200, { "Content-Type": contentTypeOf(file), "Content-Length": String(size) });
  if (req.method === "HEAD") {
    res.end();
    return;
  }
  createReadStream(file).pipe(res);
}

/** A store path made up for an upstream's directory, without Nix: `<hash>.narinfo` and `nar/<fileName>`. */
export interface FakeCachePath {
  hash: string;
  storePath: string;
  fileName: string;
  /** The NAR file (uncompressed). */
  file: Uint8Array;
  /** Its narinfo, signed with the given key. */
  narinfo: string;
}

/** A path named `name` (hash part derived from it) with a one-file NAR, signed by `key`. */
export async function fakeCachePath(name: string, key: SecretKey): Promise<FakeCachePath> {
  const hash = encodeNix32((await sha256(utf8(`fake upstream path ${name}`))).slice(0, 20));
  const file = await serializeNar({ type: "regular", contents: utf8(`contents of ${name}\n`) });
  const digest = await sha256(file);
  const fileName = `${encodeNix32(digest)}.nar`;
  const info: NarInfo = {
    storePath: `/nix/store/${hash}-${name}`,
    url: `nar/${fileName}`,
    compression: "none",
    fileHash: formatSha256(digest),
    fileSize: file.length,
    narHash: formatSha256(digest),
    narSize: file.length,
    references: [],
    sigs: [],
    extra: [],
  };
  return { hash, storePath: info.storePath, fileName, file, narinfo: formatNarInfo(withSignature(info, await signNarInfo(info, key))) };
}

export class UpstreamServer {
  readonly url: string;
  readonly port: number;
  readonly requests: SeenRequest[] = [];
  private readonly server: Server;

  private constructor(server: Server, port: number) {
    this.server = server;
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
  }

  static async start(behaviour: UpstreamBehaviour): Promise<UpstreamServer> {
    let self: UpstreamServer | undefined;
    const server = createServer((req, res) => {
      self?.requests.push({ method: req.method ?? "", path: req.url ?? "", authorization: req.headers.authorization });
      switch (behaviour.kind) {
        case "hang":
          return; // never answer; the socket stays open until stop()
        case "error":
          res.writeHead(500, { "Content-Type": "text/plain" }).end("internal server error\n");
          return;
        case "garbage":
          res.writeHead(200, { "Content-Type": "text/x-nix-narinfo" }).end("<html>this is not a narinfo</html>\n");
          return;
        case "wrong-path":
          if (req.url?.endsWith(".narinfo")) {
            res.writeHead(200, { "Content-Type": "text/x-nix-narinfo" }).end(behaviour.narinfo);
          } else {
            res.writeHead(404).end();
          }
          return;
        case "serve":
          if (!authorised(req, behaviour.token)) {
            res.writeHead(401, { "WWW-Authenticate": 'Basic realm="upstream"' }).end();
            return;
          }
          if (behaviour.redirects !== undefined && Object.hasOwn(behaviour.redirects, req.url ?? "")) {
            res.writeHead(302, { Location: behaviour.redirects[req.url ?? ""]! }).end();
            return;
          }
          serveFile(normalize(behaviour.root), req, res).catch(() => res.destroy());
          return;
      }
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const address = server.address();
    if (address === null || typeof address === "string") throw new Error("no port");
    self = new UpstreamServer(server, address.port);
    return self;
  }

  /** Requests whose path ends with `suffix`. */
  seen(suffix: string): SeenRequest[] {
    return this.requests.filter((r) => r.path.split("?")[0]!.endsWith(suffix));
  }

  /** Stops listening and drops every open connection (a hanging one included). */
  async stop(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }
}
