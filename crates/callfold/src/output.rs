//! Writing a command's answer to stdout. A reader that goes away before the end
//! (`callfold calls list | head -1`) ends the command quietly and successfully, as Unix tools
//! do, instead of a panic: the part it read was what it asked for.

use std::io::{ErrorKind, Write};

use serde::Serialize;

/// Writes `text` and a newline to stdout; a closed pipe is not an error.
pub fn print(text: &str) -> anyhow::Result<()> {
    write_line(&mut std::io::stdout().lock(), text)
}

/// Writes `value` as indented JSON to stdout; a closed pipe is not an error.
pub fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    print(&serde_json::to_string_pretty(value)?)
}

fn write_line(out: &mut impl Write, text: &str) -> anyhow::Result<()> {
    let written = writeln!(out, "{text}").and_then(|()| out.flush());
    match written {
        Err(error) if error.kind() != ErrorKind::BrokenPipe => Err(error.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader has gone, or that fails otherwise.
    struct Failing(ErrorKind);

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(self.0.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Err(self.0.into())
        }
    }

    #[test]
    fn a_closed_pipe_is_quiet_but_other_failures_are_errors() {
        assert!(write_line(&mut Failing(ErrorKind::BrokenPipe), "x").is_ok());
        assert!(write_line(&mut Failing(ErrorKind::StorageFull), "x").is_err());
        let mut written = Vec::new();
        write_line(&mut written, "{}").expect("written");
        assert_eq!(written, b"{}\n");
    }
}
