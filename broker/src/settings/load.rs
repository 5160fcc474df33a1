//! Where the settings come from: the layers (defaults, file, `SWITCHBOARD_BROKER_*`, flags), read
//! once at start-up.

use std::path::{Path, PathBuf};

use super::{Settings, SettingsError};

/// The prefix of the broker's environment variables (`SWITCHBOARD_BROKER_LISTEN`, ...).
pub const ENV_PREFIX: &str = "SWITCHBOARD_BROKER";

/// Command-line values that override every other layer.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// `--accept-store-loss`: sets `accept_store_loss` for this start.
    pub accept_store_loss: bool,
}

impl Settings {
    /// Loads the layers described in the module documentation and validates the result.
    pub fn load(overrides: &Overrides) -> Result<Self, SettingsError> {
        let (file, path) = match &overrides.config_file {
            Some(path) => (
                config::File::from(path.as_path()).required(true),
                path.as_path(),
            ),
            None => (
                config::File::from(Path::new("settings.toml")).required(false),
                Path::new("settings.toml"),
            ),
        };
        let load_error = |cause| SettingsError::Load {
            from: format!("{} and {ENV_PREFIX}_* variables", path.display()),
            cause,
        };
        let mut builder = config::Config::builder().add_source(file).add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true),
        );
        if let Some(listen) = &overrides.listen {
            builder = builder
                .set_override("listen", listen.as_str())
                .map_err(load_error)?;
        }
        if let Some(dir) = &overrides.data_dir {
            builder = builder
                .set_override("data_dir", dir.to_string_lossy().as_ref())
                .map_err(load_error)?;
        }
        if overrides.accept_store_loss {
            builder = builder
                .set_override("accept_store_loss", true)
                .map_err(load_error)?;
        }
        let settings: Settings = builder
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(load_error)?;
        settings.validate()?;
        Ok(settings)
    }
}
