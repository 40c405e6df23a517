//! One way every Setlist binary reads its settings. A binary declares its
//! flags once with clap (each with its `SETLIST_*` environment variable, all
//! optional, serialised without the ones not given) and its settings once as
//! a serde struct with defaults; [`load`] lays the flags over the YAML file
//! the user named and deserialises the result, so no field is merged by hand.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

/// The largest config file read: a settings file, not a data set.
pub const MAX_CONFIG_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read the config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error(
        "the config file {path} is {found} bytes; a config file may be at most {MAX_CONFIG_BYTES} bytes"
    )]
    TooLarge { path: String, found: u64 },
    #[error("the config file {path} is not a YAML mapping of settings: {reason}")]
    NotAMapping { path: String, reason: String },
    #[error("setting \"{field}\": {reason}")]
    Field { field: String, reason: String },
}

/// The settings `T`: the flags (and environment variables) in `given` win
/// over the YAML file `file`, which wins over `T`'s defaults. Keys are
/// snake_case, as the flags' fields are named.
pub fn load<T: DeserializeOwned>(
    given: &impl Serialize,
    file: Option<&Path>,
) -> Result<T, ConfigError> {
    let mut merged = match file {
        Some(path) => read_mapping(path)?,
        None => serde_yaml::Mapping::new(),
    };
    match serde_yaml::to_value(given) {
        Ok(serde_yaml::Value::Mapping(flags)) => {
            for (key, value) in flags {
                merged.insert(key, value);
            }
        }
        other => panic!("command-line settings serialise to a mapping, not {other:?}"),
    }
    serde_path_to_error::deserialize(serde_yaml::Value::Mapping(merged)).map_err(|e| {
        let field = e.path().to_string();
        let reason = e.into_inner().to_string();
        ConfigError::Field { field, reason }
    })
}

fn read_mapping(path: &Path) -> Result<serde_yaml::Mapping, ConfigError> {
    let shown = path.display().to_string();
    let read_error = |e: std::io::Error| ConfigError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let found = std::fs::metadata(path).map_err(read_error)?.len();
    if found > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge { path: shown, found });
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    if text.trim().is_empty() {
        return Ok(serde_yaml::Mapping::new());
    }
    serde_yaml::from_str(&text).map_err(|e| ConfigError::NotAMapping {
        path: shown,
        reason: e.to_string(),
    })
}

/// The error for a setting that has no default and was not given.
pub fn required(field: &str) -> ConfigError {
    ConfigError::Field {
        field: field.to_string(),
        reason: format!(
            "it is required: pass --{}, set SETLIST_{}, or put \"{field}:\" in the config file",
            field.replace('_', "-"),
            field.to_uppercase()
        ),
    }
}

/// The error for a setting outside its bounds.
pub fn out_of_range(field: &str, value: impl std::fmt::Display, bounds: &str) -> ConfigError {
    ConfigError::Field {
        field: field.to_string(),
        reason: format!("it is {value}; it must be {bounds}"),
    }
}

/// Refuses a setting outside `range`, saying the range.
pub fn within(
    field: &str,
    value: u64,
    range: &std::ops::RangeInclusive<u64>,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(out_of_range(
            field,
            value,
            &format!("between {} and {}", range.start(), range.end()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Default)]
    struct Flags {
        #[serde(skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        extra: Vec<String>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Settings {
        port: u16,
        name: String,
        extra: Vec<String>,
        threads: u32,
    }

    impl Default for Settings {
        fn default() -> Self {
            Settings {
                port: 80,
                name: String::new(),
                extra: Vec::new(),
                threads: 1,
            }
        }
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let yaml = file("port: 81\nname: from-file\nthreads: 4\n");
        let flags = Flags {
            port: Some(82),
            ..Flags::default()
        };
        let s: Settings = load(&flags, Some(yaml.path())).unwrap();
        assert_eq!(
            s,
            Settings {
                port: 82,
                name: "from-file".into(),
                extra: Vec::new(),
                threads: 4
            }
        );
        let s: Settings = load(&Flags::default(), None).unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn a_bad_setting_is_named() {
        let yaml = file("port: 99999\n");
        let err = load::<Settings>(&Flags::default(), Some(yaml.path())).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Field { field, .. } if field == "port"),
            "{err}"
        );
        let yaml = file("prot: 1\n");
        let err = load::<Settings>(&Flags::default(), Some(yaml.path())).unwrap_err();
        assert!(err.to_string().contains("unknown field `prot`"), "{err}");
        let yaml = file("- a list\n");
        let err = load::<Settings>(&Flags::default(), Some(yaml.path())).unwrap_err();
        assert!(matches!(err, ConfigError::NotAMapping { .. }), "{err}");
    }

    #[test]
    fn a_huge_or_missing_file_is_refused_with_its_name() {
        let yaml = file(&"#".repeat(MAX_CONFIG_BYTES as usize + 1));
        let err = load::<Settings>(&Flags::default(), Some(yaml.path())).unwrap_err();
        assert!(matches!(err, ConfigError::TooLarge { .. }), "{err}");
        let err =
            load::<Settings>(&Flags::default(), Some(Path::new("/no/such/file.yaml"))).unwrap_err();
        assert!(err.to_string().contains("/no/such/file.yaml"), "{err}");
    }

    #[test]
    fn required_settings_say_every_way_to_give_them() {
        assert_eq!(
            required("reply_partition").to_string(),
            "setting \"reply_partition\": it is required: pass --reply-partition, set SETLIST_REPLY_PARTITION, or put \"reply_partition:\" in the config file"
        );
    }
}
