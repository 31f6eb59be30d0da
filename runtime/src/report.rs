//! The error convention of every crate: an error's `Display` says what failed in its own words and
//! never repeats its cause; the cause is its `source()`. A binary prints the whole chain once, on one
//! line, with [`chain`] (or anyhow's `{:#}`, which does the same).

use std::error::Error;
use std::fmt::Write as _;
use std::process::ExitCode;

/// `error` and every cause below it, joined with `": "`: `cannot listen on 127.0.0.1:80: Permission
/// denied (os error 13)`.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // A wrapped error that (against the convention) already printed its cause is not repeated.
        if !out.ends_with(&text) {
            let _ = write!(out, ": {text}");
        }
        source = cause.source();
    }
    out
}

/// The end of every binary's `main`: success, or the chain printed once on one line as
/// `program: what failed: cause: cause` and exit status 1.
pub fn exit<E>(program: &str, result: Result<(), E>) -> ExitCode
where
    E: Into<Box<dyn Error + Send + Sync + 'static>>,
{
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let error = error.into();
            eprintln!("{program}: {}", chain(&*error));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading the config")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_names_every_cause_once() {
        let error = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(chain(&error), "reading the config: disk on fire");
    }
}
