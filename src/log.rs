//! A tiny leveled logger to stderr, configured by `RUST_LOG`.
//!
//! Hand-written rather than pulling in `log` + `env_logger`: avm needs five
//! levels, one filter and a thread-tagged line, about sixty lines. Each line
//! reads `[   1.234s] INFO  alpha/reactor: message`: seconds since the
//! process started, the level, the thread's name (a node names its threads
//! after itself), the message.
//!
//! `RUST_LOG` takes a level (`error`, `warn`, `info`, `debug`, `trace`, `off`),
//! optionally as `target=level` items separated by commas: the most verbose
//! level named anywhere wins, so `RUST_LOG=avm=debug` works as expected.
//! Unset or unparsable means `info`.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl Level {
    fn parse(word: &str) -> Option<Level> {
        Some(match word.trim().to_ascii_lowercase().as_str() {
            "off" => Level::Off,
            "error" => Level::Error,
            "warn" | "warning" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            Level::Off => "OFF  ",
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        }
    }
}

/// Parses a `RUST_LOG` value; `None` for an empty or unparsable one.
pub fn parse_filter(spec: &str) -> Option<Level> {
    spec.split(',')
        .filter_map(|item| Level::parse(item.rsplit('=').next().unwrap_or(item)))
        .max()
}

struct Config {
    max: Level,
    start: Instant,
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| Config {
        max: std::env::var("RUST_LOG")
            .ok()
            .and_then(|s| parse_filter(&s))
            .unwrap_or(Level::Info),
        start: Instant::now(),
    })
}

/// Whether a line at `level` would be printed. Check before building
/// expensive arguments.
#[inline]
pub fn enabled(level: Level) -> bool {
    level <= config().max
}

/// Prints one line. Use the `error!`..`trace!` macros instead.
#[doc(hidden)]
pub fn write_line(level: Level, args: std::fmt::Arguments<'_>) {
    let config = config();
    let elapsed = config.start.elapsed();
    let thread = std::thread::current();
    let name = thread.name().unwrap_or("-");
    // One write_fmt on a locked handle keeps lines from interleaving.
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "[{:>5}.{:03}s] {} {name}: {args}",
        elapsed.as_secs(),
        elapsed.subsec_millis(),
        level.label()
    );
}

#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)+) => {
        if $crate::log::enabled($level) {
            $crate::log::write_line($level, format_args!($($arg)+));
        }
    };
}

#[macro_export]
macro_rules! error { ($($arg:tt)+) => { $crate::log_at!($crate::log::Level::Error, $($arg)+) }; }
#[macro_export]
macro_rules! warn { ($($arg:tt)+) => { $crate::log_at!($crate::log::Level::Warn, $($arg)+) }; }
#[macro_export]
macro_rules! info { ($($arg:tt)+) => { $crate::log_at!($crate::log::Level::Info, $($arg)+) }; }
#[macro_export]
macro_rules! debug { ($($arg:tt)+) => { $crate::log_at!($crate::log::Level::Debug, $($arg)+) }; }
#[macro_export]
macro_rules! trace { ($($arg:tt)+) => { $crate::log_at!($crate::log::Level::Trace, $($arg)+) }; }

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_takes_the_most_verbose_level_named() {
        assert_eq!(parse_filter("debug"), Some(Level::Debug));
        assert_eq!(parse_filter("avm=debug"), Some(Level::Debug));
        assert_eq!(parse_filter("warn,avm=trace"), Some(Level::Trace));
        assert_eq!(parse_filter("OFF"), Some(Level::Off));
        assert_eq!(parse_filter("nonsense"), None);
        assert_eq!(parse_filter(""), None);
    }
}
