//! Typed configuration. Parsing errors and semantic errors both name the exact field path,
//! e.g. `consumers[2].scope.routes[0]: unknown method "POTS"`.

mod bindings;
mod consumers;
pub mod leaks;
mod limits;
pub mod operators;
mod restart;
mod rotation;
mod sources;
mod types;
mod validate;

use std::path::{Path, PathBuf};

pub use consumers::*;
pub use leaks::{GithubAlertsConfig, LeaksConfig, PublicKeyConfig};
pub use limits::*;
pub use operators::{OperatorConfig, Role};
pub use restart::restart_only_changes;
pub use rotation::{CredentialRotation, RotationConfig};
pub use sources::*;
pub use types::*;
pub use validate::{
    valid_name as valid_consumer_name, validate, validate_consumer, validate_consumers,
};

/// A configuration problem, always anchored to a field path or a file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {field}: {message}")]
    Field {
        file: PathBuf,
        field: String,
        message: String,
    },
    #[error("{file}: {message}")]
    Syntax { file: PathBuf, message: String },
}

impl ConfigError {
    pub(crate) fn field(file: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Field {
            file: file.to_path_buf(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses YAML into `T`, reporting the failing field's path rather than a line number alone.
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &Path,
    text: &str,
) -> Result<T, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let field = err.path().to_string();
        let inner = err.into_inner();
        let message = strip_location(&inner.to_string());
        if field == "." {
            ConfigError::Syntax {
                file: file.to_path_buf(),
                message,
            }
        } else {
            ConfigError::field(file, field, message)
        }
    })
}

/// serde_yaml appends " at line L column C"; keep it, it helps, but drop the redundant path prefix.
fn strip_location(message: &str) -> String {
    match message.split_once(": ") {
        Some((head, rest)) if !head.contains(' ') => rest.to_string(),
        _ => message.to_string(),
    }
}

/// Reads, parses and validates a config file. Relative paths inside it are resolved against
/// the file's directory so a config works wherever keygate is started from.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut config: Config = parse_yaml(path, &text)?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    config.resolve_paths(base);
    validate(path, &config)?;
    Ok(config)
}
