//! The project around the core: the offline configuration checker, the published schema,
//! the deployment guide against wrangler.toml and the configuration files, and the
//! origin-side examples. One binary for the theme; each module is the file of the same name.

mod checker;
mod config_schema;
mod deploy_docs;
mod origin_examples;
