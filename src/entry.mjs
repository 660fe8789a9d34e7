// The Worker's entry module (wrangler.toml `main`): the module worker-build generates,
// plus the configuration file bundled at build time. scripts/build.sh writes
// build/config.mjs from `--config FILE` after `portcullis check` accepted it, or
// `export default null` without one (then the PORTCULLIS_CONFIG variable is read).
// The shell reads the global below once per isolate (src/shell.rs, bundled_config).
import config from '../build/config.mjs';

globalThis.__PORTCULLIS_BUNDLED_CONFIG__ = config;

export * from '../build/worker/shim.mjs';
export { default } from '../build/worker/shim.mjs';
