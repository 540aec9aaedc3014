#!/usr/bin/env node
// The `uploader` executable (package.json "bin", also installed as `nix-edge-cache`).
//
// An installed package (under node_modules: a dev dependency, `npx -p nix-edge-cache`, a
// global install) runs the JavaScript that `npm pack` compiled into dist/ (see
// uploader/tsconfig.build.json), on Node.js >= 20 (package.json "engines"). From a clone it
// runs the TypeScript sources directly, so what runs is always what is checked out; that
// needs Node's type stripping (>= 22.18), which the clone's own Node 24 (the `node` dev
// dependency, first on PATH under npx and npm run) has.
//
// Plain JavaScript that any Node.js parses, so that an old one gets this message rather
// than a syntax error or a missing function halfway through a push.
const MIN_MAJOR = 20;
const TYPE_STRIPPING = [22, 18];
const [major, minor] = process.versions.node.split(".").map(Number);
const installed = import.meta.url.includes("/node_modules/");

function refuse(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}

if (major < MIN_MAJOR) {
  refuse(
    `the uploader needs Node.js ${MIN_MAJOR} or later; this is ${process.version} (${process.execPath}).\n` +
      `hint: install a current Node.js, or run it with one from npm: npx -p node@22 -p nix-edge-cache uploader ...`,
  );
}
if (!installed && (major < TYPE_STRIPPING[0] || (major === TYPE_STRIPPING[0] && minor < TYPE_STRIPPING[1]))) {
  refuse(
    `from a clone the uploader runs its TypeScript sources, which needs Node.js ${TYPE_STRIPPING.join(".")} or later; this is ${process.version}.\n` +
      `hint: after npm install, run it as npx uploader ... or npm run uploader -- ... (both use the project's Node 24), or install the packed tarball (npm pack)`,
  );
}

const { main } = await import(installed ? "../dist/uploader/cli.js" : "./cli.ts");
process.exitCode = await main(process.argv.slice(2));
