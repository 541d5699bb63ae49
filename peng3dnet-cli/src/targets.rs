//! Targets shared by `ping`, `status` and `watch`: reading them from a file or stdin, and
//! resolving them to every address of the chosen family (the connect tries them all, as
//! RFC 8305 describes).

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use peng3dnet::target::{Family, Target};
use tokio::time::timeout;

/// Targets from a file (`-` for stdin): one a line; blank lines and what follows a `#`
/// are skipped.
pub(crate) fn read_target_file(path: &Path) -> Result<Vec<String>, String> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read targets from stdin: {e}"))?;
        text
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {}", path.display(), io_words(&e)))?
    };
    Ok(parse_target_lines(&text))
}

/// The targets of a file's text.
pub(crate) fn parse_target_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An I/O error without its `(os error N)` suffix.
fn io_words(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Resolves a target to its addresses of `family`, within `allowed`; the error is a line
/// for the user.
pub(crate) async fn resolve(
    target: &Target,
    name: &str,
    family: Family,
    allowed: Duration,
) -> Result<Vec<SocketAddr>, String> {
    match timeout(allowed, target.resolve(family)).await {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(format!("cannot resolve {name}: no {family} address")),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound && family != Family::Any => {
            Err(format!("cannot resolve {name}: no {family} address"))
        }
        Ok(Err(e)) => Err(format!("cannot resolve {name}: {e}")),
        Err(_) => Err(format!("cannot resolve {name}: timed out")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_files_skip_blanks_and_comments() {
        let text = "# servers\nlocalhost\n\n  a.example:9000  # the lobby\n[::1]:8080\n   \n";
        assert_eq!(
            parse_target_lines(text),
            vec!["localhost", "a.example:9000", "[::1]:8080"]
        );
        assert!(parse_target_lines("# nothing\n\n").is_empty());
    }
}
