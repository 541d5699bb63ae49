//! The master client for synchronous code: the same requests, limits and errors as the
//! async functions, for a program without an async runtime (or inside one, from a
//! thread that may block).
//!
//! Each call runs the async request on a thread of its own with a one-thread tokio
//! runtime, and waits for it: it works inside or outside a tokio runtime, as
//! [`crate::blocking`] does, and costs a thread start per call (microseconds, against
//! the milliseconds of an HTTP exchange). It blocks the calling thread: on a tokio
//! `current_thread` runtime, do not fetch from a master served on that same runtime (it
//! could never answer; the call ends at its timeout).
//!
//! ```no_run
//! use peng3dnet::master::{blocking, Query};
//!
//! # fn main() -> Result<(), peng3dnet::master::MasterError> {
//! for server in blocking::fetch("http://127.0.0.1:8090", &Query::new().up())? {
//!     println!("{} {}", server.address, server.name.as_deref().unwrap_or(""));
//! }
//! # Ok(()) }
//! ```

use std::future::Future;

use super::{Announced, Announcement, FetchOptions, ListedServer, MasterError, Page, Query};

/// [`super::fetch`], blocking.
pub fn fetch(url: &str, query: &Query) -> Result<Vec<ListedServer>, MasterError> {
    fetch_with(url, query, &FetchOptions::default())
}

/// [`super::fetch_with`], blocking.
pub fn fetch_with(
    url: &str,
    query: &Query,
    options: &FetchOptions,
) -> Result<Vec<ListedServer>, MasterError> {
    let (url, query, options) = (url.to_owned(), query.clone(), options.clone());
    on_own_thread(async move { super::fetch_with(&url, &query, &options).await })
}

/// [`super::fetch_page`], blocking.
pub fn fetch_page(url: &str, query: &Query, options: &FetchOptions) -> Result<Page, MasterError> {
    let (url, query, options) = (url.to_owned(), query.clone(), options.clone());
    on_own_thread(async move { super::fetch_page(&url, &query, &options).await })
}

/// [`super::announce`], blocking.
pub fn announce(
    url: &str,
    what: &Announcement,
    options: &FetchOptions,
) -> Result<Announced, MasterError> {
    let (url, what, options) = (url.to_owned(), what.clone(), options.clone());
    on_own_thread(async move { super::announce(&url, &what, &options).await })
}

/// [`super::unlist`], blocking.
pub fn unlist(url: &str, what: &Announcement, options: &FetchOptions) -> Result<bool, MasterError> {
    let (url, what, options) = (url.to_owned(), what.clone(), options.clone());
    on_own_thread(async move { super::unlist(&url, &what, &options).await })
}

/// Runs `request` to its end on a new thread with a one-thread runtime.
fn on_own_thread<T: Send + 'static>(
    request: impl Future<Output = Result<T, MasterError>> + Send + 'static,
) -> Result<T, MasterError> {
    let failed = |what: &str, e: std::io::Error| MasterError::Http {
        master: String::from("(not contacted)"),
        reason: format!("cannot {what}: {e}"),
    };
    let thread = std::thread::Builder::new()
        .name("peng3dnet-master".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| failed("start a runtime", e))?;
            runtime.block_on(request)
        })
        .map_err(|e| failed("start a thread", e))?;
    match thread.join() {
        Ok(result) => result,
        // A panic is the request's own (a bug): let it go on as it would have.
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
