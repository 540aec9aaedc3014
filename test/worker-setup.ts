// Runs in workerd before every Worker test file: the D1 index gets its schema before each
// test (applying the migrations is a no-op when it is there; reset() drops it with the
// data, so tests that reset in the middle use resetAll from helpers/worker.ts).
import { beforeEach } from "vitest";
import { migrate } from "./helpers/worker.ts";

beforeEach(migrate);
