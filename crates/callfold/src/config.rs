//! `callfold.toml`: every key named like a command-line option (without the dashes, `-` as
//! `_`) becomes that option's default, so the command line wins over the environment, the
//! environment over the file, and the file over the built-in defaults. The file alone sets the
//! linking rules (`[linking_rules]`) and the topic precedence graph (`precedence`). Secrets are
//! never read from it.
//!
//! The file is `--config PATH` (or `CALLFOLD_CONFIG`), else `callfold.toml` in the working
//! folder when there is one; without a file everything is as the built-in defaults say.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use callfold_ingest::LinkingRules;
use callfold_projector::{Precedence, PrecedenceCycle};
use clap::Command;
use serde::Deserialize;

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "CALLFOLD_CONFIG";
/// The file used when none is named, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "callfold.toml";

/// Why the configuration cannot be used. Never quotes a value (one could be a secret put
/// there by mistake).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {problem}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// The file is not TOML, or a key holds the wrong kind of value.
    #[error("{path} is not a valid configuration: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line.
        problem: String,
    },
    /// A key names no option of any command.
    #[error("{path}: unknown key `{key}`{hint}")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// A hint for keys that look like secrets.
        hint: &'static str,
    },
    /// The precedence graph has a cycle.
    #[error(transparent)]
    Cycle(#[from] PrecedenceCycle),
}

/// What the file holds: option defaults, then the tables only the file sets.
#[derive(Debug, Default, Deserialize)]
struct FileContents {
    /// `topic = ["/json/pointer", ...]`: where that topic keeps its call id.
    #[serde(default)]
    linking_rules: BTreeMap<String, Vec<String>>,
    /// `[["before", "after"], ...]`: replaces the default precedence graph.
    precedence: Option<Vec<(String, String)>>,
    /// Every other key: an option's default.
    #[serde(flatten)]
    options: BTreeMap<String, toml::Value>,
}

/// The configuration in effect.
#[derive(Debug, Default)]
pub struct Config {
    /// The file read, if any.
    pub path: Option<PathBuf>,
    contents: FileContents,
}

/// The file named by `--config`/`--config=` in `args`, else by [`CONFIG_ENV`], else
/// [`DEFAULT_CONFIG_FILE`] when it exists.
fn locate(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().filter_map(|arg| arg.to_str());
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    if let Some(path) = std::env::var_os(CONFIG_ENV) {
        return Some(PathBuf::from(path));
    }
    let default = Path::new(DEFAULT_CONFIG_FILE);
    default.exists().then(|| default.to_path_buf())
}

impl Config {
    /// Reads the configuration file the command line `args` point to, if any.
    pub fn for_args(args: &[OsString]) -> Result<Self, ConfigError> {
        let Some(path) = locate(args) else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::Unreadable {
            path: path.clone(),
            problem: e.to_string(),
        })?;
        let contents = toml::from_str(&text).map_err(|e| {
            // toml's own message may quote the value; say only where the problem is.
            let line = e
                .span()
                .map_or(0, |span| text[..span.start].matches('\n').count() + 1);
            ConfigError::Invalid {
                path: path.clone(),
                problem: format!("line {line}: not TOML, or a value of the wrong kind"),
            }
        })?;
        Ok(Self {
            path: Some(path),
            contents,
        })
    }

    /// `command` with the file's option keys as defaults of the options of that name, in every
    /// subcommand that has one (or on the command itself, for its global options). A key that
    /// none has is an error.
    pub fn apply(&self, mut command: Command) -> Result<Command, ConfigError> {
        let path = self.path.clone().unwrap_or_default();
        for (key, value) in &self.contents.options {
            let text = match value {
                toml::Value::String(text) => text.clone(),
                toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
                    value.to_string()
                }
                _ => {
                    return Err(ConfigError::Invalid {
                        path,
                        problem: format!("`{key}` must be a string, a number or a boolean"),
                    });
                }
            };
            let has = |command: &Command| command.get_arguments().any(|a| a.get_id() == key);
            let global = has(&command);
            let owners: Vec<String> = command
                .get_subcommands()
                .filter(|sub| has(sub))
                .map(|sub| sub.get_name().to_owned())
                .collect();
            if global {
                let text = text.clone();
                command = command.mut_arg(key.as_str(), |arg| arg.default_value(text));
            } else if owners.is_empty() {
                let hint = if key.contains("secret") || key.contains("token") {
                    ": secrets and tokens are read from the environment only"
                } else {
                    ""
                };
                let key = key.clone();
                return Err(ConfigError::UnknownKey { path, key, hint });
            }
            for owner in owners {
                let text = text.clone();
                command = command.mut_subcommand(owner, |sub| {
                    sub.mut_arg(key.as_str(), |arg| arg.default_value(text))
                });
            }
        }
        Ok(command)
    }

    /// Whether the file sets option `id`.
    pub fn sets(&self, id: &str) -> bool {
        self.contents.options.contains_key(id)
    }

    /// The default linking rules, with the file's `[linking_rules]` in place of the defaults of
    /// the topics it names.
    pub fn linking_rules(&self) -> LinkingRules {
        self.contents.linking_rules.iter().fold(
            LinkingRules::default(),
            |rules, (topic, pointers)| {
                let pointers: Vec<&str> = pointers.iter().map(String::as_str).collect();
                rules.with_rule(topic, &pointers)
            },
        )
    }

    /// The file's precedence graph, or the default one.
    pub fn precedence(&self) -> Result<Precedence, ConfigError> {
        let Some(edges) = &self.contents.precedence else {
            return Ok(Precedence::default());
        };
        let edges: Vec<(&str, &str)> = edges
            .iter()
            .map(|(before, after)| (before.as_str(), after.as_str()))
            .collect();
        Ok(Precedence::from_edges(&edges)?)
    }
}
