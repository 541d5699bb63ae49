//! [`Server::announce`]: a running server keeps itself listed on a master until it shuts
//! down.

use crate::master::{AnnounceOptions, Announcer, MasterError};

use super::Server;

impl Server {
    /// Lists this server on the master at `url` until it shuts down: announces its port
    /// now and again every interval the master asks for, retries while the master cannot
    /// be reached, and unlists it when [`shutdown`](Self::shutdown) starts (or when the
    /// returned [`Announcer`] is stopped or dropped). See [`crate::master`].
    ///
    /// The master lists the address the announce comes from: a server bound to one
    /// address (`127.0.0.5:7000`) announces from that address, so the master lists what
    /// it listens on; a server bound to every interface (`0.0.0.0`) announces from
    /// whichever address the system picks to reach the master.
    ///
    /// Fails at once, sending nothing, on a bad URL, or outside a runtime.
    ///
    /// ```no_run
    /// use peng3dnet::{PingResponder, Server};
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = Server::builder().pingable(PingResponder::new()).bind("0.0.0.0:7000").await?;
    /// let announcer = server.announce("http://master.example.org:8090")?;
    /// // ... serve ...
    /// announcer.stop().await; // unlist first, then close the clients
    /// server.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn announce(&self, url: &str) -> Result<Announcer, MasterError> {
        self.announce_with(url, AnnounceOptions::default())
    }

    /// [`announce`](Self::announce) with options (tags, interval, backoff, TLS...). A
    /// source address of `options.http` wins over the server's own.
    pub fn announce_with(
        &self,
        url: &str,
        mut options: AnnounceOptions,
    ) -> Result<Announcer, MasterError> {
        let local = self.shared.local_addr;
        if options.http.source.is_none() && !local.ip().is_unspecified() {
            options.http.source = Some(local.ip());
        }
        Announcer::start_until(
            url,
            local.port(),
            options,
            self.shared.shutdown.child_token(),
        )
    }
}
