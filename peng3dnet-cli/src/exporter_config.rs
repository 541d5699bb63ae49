//! `exporter --config FILE`: probe modules, as blackbox_exporter's. A scrape picks one
//! with `module=NAME` (`default` when it names none); the file is reread on SIGHUP.
//!
//! ```toml
//! [modules.default]
//! timeout = 3                 # seconds; a scrape's timeout= overrides it
//!
//! [modules.tls]
//! tls = true                  # verify against the system's roots, or tls-ca-file
//! tls-ca-file = "ca.pem"      # relative to this file's directory
//! tls-cert-file = "client.pem" # a client certificate, with tls-key-file
//! tls-key-file = "client.key"
//! tls-server-name = "game.example.org"
//!
//! [modules.self-signed]
//! tls = "insecure"            # TLS without verification
//! ```
//!
//! Without `--config` there is one module, `default`: `--timeout`, no TLS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use peng3dnet::tls::ClientTls;
use serde::Deserialize;

use crate::config_file::{self, Seconds};

/// The file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    #[serde(default)]
    modules: BTreeMap<String, ModuleFile>,
}

/// `tls =`: `true`, `false` or `"insecure"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsMode {
    Off,
    Verify,
    Insecure,
}

impl<'de> Deserialize<'de> for TlsMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = TlsMode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or \"insecure\"")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<TlsMode, E> {
                Ok(if v { TlsMode::Verify } else { TlsMode::Off })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TlsMode, E> {
                match v {
                    "insecure" => Ok(TlsMode::Insecure),
                    _ => Err(E::custom(format!(
                        "\"{}\" is not a TLS mode: use true, false or \"insecure\"",
                        peng3dnet::text::escape(v)
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// One module, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ModuleFile {
    timeout: Option<Seconds>,
    tls: Option<TlsMode>,
    tls_ca_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_server_name: Option<String>,
}

/// A probe module: how a probe that names it connects.
#[derive(Debug, Clone)]
pub(crate) struct Module {
    /// The probe timeout when the scrape sets none (cut to `--max-timeout`).
    pub(crate) timeout: Option<Duration>,
    /// TLS, when the module uses it.
    pub(crate) tls: Option<ClientTls>,
    /// What the module says, in the file's words (for `debug=true`).
    pub(crate) shown: String,
}

/// The modules a scrape may name.
#[derive(Debug, Clone)]
pub(crate) struct Modules {
    modules: BTreeMap<String, Module>,
}

impl Modules {
    /// Only `default`: the flags' timeout, no TLS.
    pub(crate) fn builtin() -> Modules {
        let mut modules = BTreeMap::new();
        modules.insert(
            "default".to_owned(),
            Module {
                timeout: None,
                tls: None,
                shown: "the built-in default: --timeout, no TLS".to_owned(),
            },
        );
        Modules { modules }
    }

    /// The module called `name`, or why there is none.
    pub(crate) fn get(&self, name: &str) -> Result<&Module, String> {
        self.modules.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.modules.keys().map(String::as_str).collect();
            let hint = config_file::did_you_mean(name, names.iter().copied())
                .map(|m| format!("did you mean '{m}'? "))
                .unwrap_or_default();
            format!(
                "unknown module '{}' ({hint}modules: {})",
                peng3dnet::text::escape(name),
                names.join(", ")
            )
        })
    }

    /// The module names.
    pub(crate) fn names(&self) -> Vec<&str> {
        self.modules.keys().map(String::as_str).collect()
    }

    /// Reads `path`: every module checked and its TLS files read now, so that a bad file
    /// changes nothing. A file without `[modules.default]` gets the built-in one.
    pub(crate) fn load(path: &Path) -> Result<Modules, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file: File =
            toml::from_str(&text).map_err(|e| config_file::located(path, &text, &e))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut modules = Modules::builtin().modules;
        for (name, m) in file.modules {
            let module = build(m, base).map_err(|e| {
                format!(
                    "{}: module '{}': {e}",
                    path.display(),
                    peng3dnet::text::escape(&name)
                )
            })?;
            modules.insert(name, module);
        }
        Ok(Modules { modules })
    }
}

fn build(m: ModuleFile, base: &Path) -> Result<Module, String> {
    let at = |p: &PathBuf| {
        if p.is_absolute() {
            p.clone()
        } else {
            base.join(p)
        }
    };
    let ca = m.tls_ca_file.as_ref().map(at);
    let cert = m.tls_cert_file.as_ref().map(at);
    let key = m.tls_key_file.as_ref().map(at);
    let mode = match m.tls {
        Some(mode) => mode,
        // A CA or a client certificate means TLS.
        None if ca.is_some() || cert.is_some() => TlsMode::Verify,
        None => TlsMode::Off,
    };
    if mode != TlsMode::Verify && (ca.is_some() || cert.is_some() || key.is_some()) {
        return Err("tls-ca-file, tls-cert-file and tls-key-file need tls = true".into());
    }
    let tls = match mode {
        TlsMode::Off => {
            if m.tls_server_name.is_some() {
                return Err("tls-server-name needs tls = true or \"insecure\"".into());
            }
            None
        }
        TlsMode::Insecure => Some(ClientTls::dangerous_no_verification()),
        TlsMode::Verify => Some(
            match (&ca, &cert, &key) {
                (Some(ca), Some(cert), Some(key)) => {
                    ClientTls::with_ca_file_and_client_cert(ca, cert, key)
                }
                (_, Some(_), None) => return Err("tls-cert-file needs tls-key-file".into()),
                (_, None, Some(_)) => return Err("tls-key-file needs tls-cert-file".into()),
                (None, Some(_), Some(_)) => {
                    return Err("tls-cert-file needs tls-ca-file (the CA of the servers)".into())
                }
                (Some(ca), None, None) => ClientTls::with_ca_file(ca),
                (None, None, None) => ClientTls::with_system_roots(),
            }
            .map_err(|e| e.to_string())?,
        ),
    };
    let tls = match (tls, &m.tls_server_name) {
        (Some(tls), Some(server_name)) => Some(tls.with_server_name(server_name)),
        (tls, _) => tls,
    };
    let mut shown = vec!["from --config".to_owned()];
    if let Some(t) = m.timeout {
        shown.push(format!("timeout={}s", t.0.as_secs_f64()));
    }
    shown.push(
        match mode {
            TlsMode::Off => "no TLS",
            TlsMode::Verify => "tls=true",
            TlsMode::Insecure => "tls=insecure",
        }
        .to_owned(),
    );
    for (what, path) in [
        ("tls-ca-file", &ca),
        ("tls-cert-file", &cert),
        ("tls-key-file", &key),
    ] {
        if let Some(p) = path {
            shown.push(format!("{what}={}", p.display()));
        }
    }
    if let Some(n) = &m.tls_server_name {
        shown.push(format!("tls-server-name={}", peng3dnet::text::escape(n)));
    }
    let shown = shown.join(", ");
    Ok(Module {
        timeout: m.timeout.map(|t| t.0),
        tls,
        shown,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Modules, String> {
        let dir = std::env::temp_dir().join(format!("peng3dnet-modules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("m{}.toml", text.len()));
        std::fs::write(&path, text).unwrap();
        let loaded = Modules::load(&path);
        let _ = std::fs::remove_file(&path);
        loaded.map_err(|e| e.replace(&path.display().to_string(), "FILE"))
    }

    #[test]
    fn modules_are_read_and_checked() {
        let modules =
            load("[modules.fast]\ntimeout = 0.5\n[modules.insecure]\ntls = \"insecure\"\n")
                .unwrap();
        assert_eq!(modules.names(), ["default", "fast", "insecure"]);
        assert_eq!(
            modules.get("fast").unwrap().timeout,
            Some(Duration::from_millis(500))
        );
        assert!(modules.get("fast").unwrap().tls.is_none());
        assert!(modules.get("insecure").unwrap().tls.is_some());
        let e = modules.get("fsat").unwrap_err();
        assert_eq!(
            e,
            "unknown module 'fsat' (did you mean 'fast'? modules: default, fast, insecure)"
        );
    }

    #[test]
    fn a_bad_module_is_named_with_its_file_line_and_a_suggestion() {
        let e = load("[modules.a]\ntimeuot = 3\n").unwrap_err();
        assert!(
            e.starts_with("FILE:2: key `timeuot`: unknown key; did you mean `timeout`?"),
            "{e}"
        );
        let e = load("[modules.a]\ntls = \"yes\"\n").unwrap_err();
        assert!(e.contains("is not a TLS mode"), "{e}");
        let e =
            load("[modules.a]\ntls-cert-file = \"c.pem\"\ntls-ca-file = \"ca.pem\"\n").unwrap_err();
        assert_eq!(e, "FILE: module 'a': tls-cert-file needs tls-key-file");
        let e = load("[modules.a]\ntls-ca-file = \"missing.pem\"\n").unwrap_err();
        assert!(e.starts_with("FILE: module 'a': "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}
