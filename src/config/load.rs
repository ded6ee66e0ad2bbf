//! Loading: the built-in defaults, then the config file, then `ORDER_ACCEPTANCE__SECTION__KEY`
//! variables, then the well-known `DATABASE_URL`, `MARKETPLACE_URL` and `MARKETPLACE_API_KEY`,
//! merged by Figment into the loose [`raw`] form and handed to [`super::validate`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;

use super::raw;
use super::{ConfigError, Needs, Settings};

/// Where the shipped configuration lives, relative to the working directory.
const DEFAULT_CONFIG_PATH: &str = "config/default.toml";

/// The shipped file is also the bottom layer, compiled in: every key has its default in one
/// place, and a binary without the file beside it still has them all.
const BUILT_IN_DEFAULTS: &str = include_str!("../../config/default.toml");

const ENV_PREFIX: &str = "ORDER_ACCEPTANCE__";

/// Well-known variables and the key each one overrides. Listed here once so the loader, the
/// missing-value message and the docs agree.
pub(super) const WELL_KNOWN_VARS: [(&str, &str); 3] = [
    ("DATABASE_URL", "database.url"),
    ("MARKETPLACE_URL", "marketplace.url"),
    ("MARKETPLACE_API_KEY", "marketplace.api_key"),
];

impl Settings {
    /// Loads settings from `path` (or `config/default.toml` when it exists) and the process
    /// environment.
    pub fn load(path: Option<&Path>, needs: Needs) -> Result<Self, ConfigError> {
        Self::load_from(path, needs, std::env::vars())
    }

    /// Like [`Settings::load`], with the environment passed in so tests need not touch the
    /// process environment.
    pub fn load_from(
        path: Option<&Path>,
        needs: Needs,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(BUILT_IN_DEFAULTS));
        if let Some(file) = config_file(path)? {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = merge_env(figment, env.into_iter().collect());
        let raw: raw::Settings = figment.extract().map_err(|err| ConfigError {
            problems: err.into_iter().map(describe_figment_error).collect(),
        })?;
        Self::from_raw(raw, needs)
    }
}

/// An explicit path must exist; the default path is used only when present.
fn config_file(path: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    match path {
        Some(path) if path.is_file() => Ok(Some(path.to_path_buf())),
        Some(path) => Err(ConfigError::one(format!(
            "--config {}: no such file; give the path of a TOML config file (see config/default.toml)",
            path.display()
        ))),
        None => {
            let default = Path::new(DEFAULT_CONFIG_PATH);
            Ok(default.is_file().then(|| default.to_path_buf()))
        }
    }
}

/// `ORDER_ACCEPTANCE__VALIDATION__INTERVAL=2s` becomes `validation.interval = "2s"`; the
/// well-known variables are merged last. Values are parsed like TOML scalars (`16`, `true`),
/// but string keys accept any scalar (see [`raw::lenient_string`]) so a numeric API key still
/// loads as text.
fn merge_env(mut figment: Figment, env: HashMap<String, String>) -> Figment {
    let mut prefixed: Vec<(&String, &String)> = env
        .iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    prefixed.sort();
    for (name, value) in prefixed {
        let key = name[ENV_PREFIX.len()..].to_lowercase().replace("__", ".");
        let value: Value = value.parse().unwrap_or_else(|_| Value::from(value.clone()));
        figment = figment.merge(Serialized::default(&key, value));
    }
    for (name, key) in WELL_KNOWN_VARS {
        if let Some(value) = env.get(name) {
            figment = figment.merge(Serialized::default(key, value.clone()));
        }
    }
    figment
}

/// Figment's messages name the key and the source; the value itself is shown only for
/// non-secret keys.
fn describe_figment_error(err: figment::Error) -> String {
    let key = err.path.join(".");
    let source = err
        .metadata
        .as_ref()
        .map(|meta| format!(" (from {})", meta.name))
        .unwrap_or_default();
    if key.is_empty() {
        format!("{}{source}", err.kind)
    } else if is_secret_key(&key) && shows_a_value(&err.kind) {
        format!("{key}: not a valid value{source}")
    } else {
        format!("{key}: {}{source}", err.kind)
    }
}

/// Whether a message of this kind could quote the value; an unknown or missing field's names
/// only keys.
fn shows_a_value(kind: &figment::error::Kind) -> bool {
    use figment::error::Kind;
    !matches!(
        kind,
        Kind::UnknownField(..) | Kind::MissingField(..) | Kind::DuplicateField(..)
    )
}

/// The keys whose values are never shown: the keys and the database URL, and a shop table
/// given as a plain value (`shops.NAME = "..."`), which is most likely a key put in the wrong
/// place.
fn is_secret_key(key: &str) -> bool {
    matches!(
        key.split('.').collect::<Vec<_>>()[..],
        ["marketplace", "api_key"]
            | ["database", "url"]
            | ["shops"]
            | ["shops", _]
            | ["shops", _, "api_key"]
    )
}
