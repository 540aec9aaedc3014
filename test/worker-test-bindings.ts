// Vars and secrets the Worker sees in workerd tests. Tests have no internet, so no
// upstream caches; the tokens and keys here are throwaway test values.
export const TEST_WRITE_TOKEN = "test-write-token";
export const TEST_SECOND_WRITE_TOKEN = "test-write-token-ci";

export const WORKER_TEST_BINDINGS: Record<string, string> = {
  WRITE_TOKEN: TEST_WRITE_TOKEN,
  WRITE_TOKEN_CI: TEST_SECOND_WRITE_TOKEN,
  UPSTREAM_CACHES: "",
  TRUSTED_PUBLIC_KEYS: "",
};
