#!/usr/bin/env node
// The `uploader` executable (package.json "bin").
//
// From a clone it runs the TypeScript sources directly (Node >= 22.18 strips types by
// default), so what runs is always what is checked out. Node refuses to strip types
// under node_modules, so an installed package runs the JavaScript that `npm pack`
// compiled into dist/ (see uploader/tsconfig.build.json).
const installed = import.meta.url.includes("/node_modules/");
const { main } = await import(installed ? "../dist/uploader/cli.js" : "./cli.ts");

process.exitCode = await main(process.argv.slice(2));
