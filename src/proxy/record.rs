//! One request's log line in the making, and the bodies that count its
//! bytes as they stream (nothing is buffered). The line is sent to the log
//! writer when the last holder lets go of the record: after the response
//! body ended or was dropped, after a tunnel closed.

use super::log::{CredentialUse, Entry, Msg};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::Method;
use std::pin::Pin;
use std::sync::atomic::{
    AtomicBool, AtomicU16, AtomicU64, AtomicUsize,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

/// Where finished records go, and the counts [`super::Stats`] reports.
pub(crate) struct Sink {
    tx: mpsc::Sender<Msg>,
    pub requests: AtomicU64,
    pub denied: AtomicU64,
    /// Records not yet sent: each sends its line when dropped.
    unsent: AtomicUsize,
}

impl Sink {
    pub fn new(tx: mpsc::Sender<Msg>) -> Sink {
        Sink {
            tx,
            requests: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            unsent: AtomicUsize::new(0),
        }
    }

    /// Whether every record made so far has sent its line.
    pub fn all_sent(&self) -> bool {
        self.unsent.load(SeqCst) == 0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    Http,
    Https,
    Tunnel,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Tunnel => "tunnel",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Https => 443,
            _ => 80,
        }
    }
}

pub(crate) struct Record {
    sink: Arc<Sink>,
    start: Instant,
    ts_ms: u64,
    method: Method,
    scheme: Scheme,
    host: String,
    port: u16,
    path: String,
    deny: AtomicBool,
    /// 0 until a status is sent.
    status: AtomicU16,
    up: AtomicU64,
    down: AtomicU64,
    reason: Mutex<String>,
    credentials: Mutex<Vec<CredentialUse>>,
}

impl Record {
    pub fn new(
        sink: &Arc<Sink>,
        start: Instant,
        method: Method,
        scheme: Scheme,
        host: String,
        port: u16,
        path: &str,
    ) -> Record {
        sink.unsent.fetch_add(1, SeqCst);
        Record {
            sink: Arc::clone(sink),
            start,
            ts_ms: crate::runs::now_ms().saturating_sub(start.elapsed().as_millis() as u64),
            method,
            scheme,
            host,
            port,
            path: path.to_owned(),
            deny: AtomicBool::new(false),
            status: AtomicU16::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            reason: Mutex::new(String::new()),
            credentials: Mutex::new(Vec::new()),
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Relaxed);
    }

    pub fn set_deny(&self, reason: &str) {
        self.deny.store(true, Relaxed);
        self.set_reason(reason);
    }

    pub fn set_reason(&self, reason: &str) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        r.clear();
        r.push_str(reason);
    }

    /// Records what went wrong unless something already was.
    pub fn note(&self, reason: &str) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_empty() {
            r.push_str(reason);
        }
    }

    /// Records what a credential grant did (once per grant and action).
    pub fn credential(&self, grant: &str, action: &str) {
        let mut c = self.credentials.lock().unwrap_or_else(|p| p.into_inner());
        if !c.iter().any(|u| u.grant == grant && u.action == action) {
            c.push(CredentialUse {
                grant: grant.to_string(),
                action: action.to_string(),
            });
        }
    }

    pub fn add_up(&self, n: u64) {
        self.up.fetch_add(n, Relaxed);
    }

    pub fn add_down(&self, n: u64) {
        self.down.fetch_add(n, Relaxed);
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let deny = *self.deny.get_mut();
        self.sink.requests.fetch_add(1, Relaxed);
        if deny {
            self.sink.denied.fetch_add(1, Relaxed);
        }
        let status = *self.status.get_mut();
        let reason = std::mem::take(self.reason.get_mut().unwrap_or_else(|p| p.into_inner()));
        let e = Entry {
            ts_ms: self.ts_ms,
            run: String::new(),
            method: self.method.as_str().to_owned(),
            scheme: self.scheme.as_str().to_owned(),
            host: std::mem::take(&mut self.host),
            port: self.port,
            path: std::mem::take(&mut self.path),
            status: (status != 0).then_some(status),
            bytes_up: *self.up.get_mut(),
            bytes_down: *self.down.get_mut(),
            duration_ms: self.start.elapsed().as_millis() as u64,
            decision: if deny { "deny" } else { "allow" }.to_owned(),
            reason,
            credentials: std::mem::take(
                self.credentials
                    .get_mut()
                    .unwrap_or_else(|p| p.into_inner()),
            ),
        };
        // The writer only goes away at shutdown, after every task is gone.
        let _ = self.sink.tx.send(Msg::Entry(e));
        self.sink.unsent.fetch_sub(1, SeqCst);
    }
}

/// The client's request body on its way upstream, counted.
pub(crate) struct UpBody {
    inner: Incoming,
    rec: Arc<Record>,
}

impl UpBody {
    pub fn new(inner: Incoming, rec: Arc<Record>) -> UpBody {
        UpBody { inner, rec }
    }
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        match &r {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.rec.add_up(d.len() as u64);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                this.rec
                    .note(&format!("client request body ended early: {e}"));
            }
            _ => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// What moat sends the client: its own short answers, or the upstream's
/// body streamed through and counted.
pub(crate) enum ProxyBody {
    Empty,
    Full(Option<Bytes>),
    Upstream {
        inner: Incoming,
        rec: Arc<Record>,
        done: bool,
    },
    /// Another body with granted tokens masked.
    Redacted(Box<super::redact::RedactBody>),
}

impl ProxyBody {
    pub fn text(s: String) -> ProxyBody {
        ProxyBody::Full(Some(Bytes::from(s)))
    }

    pub fn upstream(inner: Incoming, rec: Arc<Record>) -> ProxyBody {
        ProxyBody::Upstream {
            inner,
            rec,
            done: false,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Redacted(b) => Pin::new(b.as_mut()).poll_frame(cx),
            ProxyBody::Upstream { inner, rec, done } => {
                let r = Pin::new(inner).poll_frame(cx);
                match &r {
                    Poll::Ready(Some(Ok(f))) => {
                        if let Some(d) = f.data_ref() {
                            rec.add_down(d.len() as u64);
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        *done = true;
                        rec.note(&format!("upstream response body failed: {e}"));
                    }
                    Poll::Ready(None) => *done = true,
                    Poll::Pending => {}
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Full(b) => b.is_none(),
            ProxyBody::Upstream { inner, .. } => inner.is_end_stream(),
            ProxyBody::Redacted(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            ProxyBody::Upstream { inner, .. } => inner.size_hint(),
            ProxyBody::Redacted(b) => b.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let ProxyBody::Upstream { inner, rec, done } = self {
            if !*done && !inner.is_end_stream() {
                rec.note("client went away before the response ended");
            }
        }
    }
}
