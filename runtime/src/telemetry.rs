//! Logging: the `--log` / `--log-format` flag group and the global `tracing` subscriber it describes.

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Logging flags.
#[derive(clap::Args, Clone, Debug)]
pub struct LogArgs {
    /// Log format.
    #[arg(
        long = "log-format",
        env = "SWITCHBOARD_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,

    /// Log filter in `tracing` EnvFilter syntax, e.g. `info` or `info,registry=debug`.
    #[arg(long = "log", env = "RUST_LOG", default_value = "info")]
    pub log: String,
}

impl Default for LogArgs {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log: "info".to_owned(),
        }
    }
}

/// Installs the global `tracing` subscriber described by `args`. An invalid filter falls back to `info`
/// (with a warning); a second call (e.g. several servers in one test process) leaves the first in place.
pub fn init_tracing(args: &LogArgs) {
    let (filter, bad_filter) = match EnvFilter::try_new(&args.log) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new("info"), Some(error)),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let installed = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let (Ok(()), Some(error)) = (installed, bad_filter) {
        tracing::warn!(%error, filter = %args.log, "invalid log filter, using \"info\"");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_flags_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            log: LogArgs,
        }
        let cli = Cli::parse_from(["x", "--log-format", "json", "--log", "debug"]);
        assert_eq!(cli.log.log_format, LogFormat::Json);
        assert_eq!(cli.log.log, "debug");
    }
}
