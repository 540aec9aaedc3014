// `sudo node restart-daemon.js <socket>`: restarts the Nix daemon listening on the socket
// (daemon-restart.ts). Run by the main and post steps where no service manager runs it.
import { restartDaemon } from "./daemon-restart.ts";

const socket = process.argv[2];
if (!socket) {
  process.stderr.write("usage: restart-daemon.js <socket>\n");
  process.exit(2);
}
try {
  process.stdout.write(`${await restartDaemon(socket)}\n`);
  // The new daemon is detached: nothing of it keeps this process alive.
  process.exit(0);
} catch (err) {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
}
