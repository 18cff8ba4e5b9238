//! Response redaction: a granted token (raw, base64, or in its HTTP Basic
//! form) that comes back from an upstream (an echo endpoint, an error page
//! quoting the request) is overwritten with a mask of the same length
//! before the sandbox sees it. Same length keeps Content-Length true.
//!
//! Bodies are redacted as they stream: each chunk is scanned together
//! with the last `longest - 1` bytes of the one before, which are held
//! back until the next chunk (or the end) shows they do not start a
//! token. Nothing else is buffered.

use super::record::{ProxyBody, Record};
use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderValue};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use zeroize::Zeroizing;

/// What replaces each byte of a token.
const MASK: u8 = b'*';

/// The byte strings to find, each with the grant it belongs to.
pub(crate) struct Redactor {
    needles: Vec<(Zeroizing<Vec<u8>>, usize)>,
    names: Vec<String>,
    longest: usize,
    first: [bool; 256],
}

impl Redactor {
    /// `grants`: each grant's name and the forms of its token.
    pub fn new(grants: Vec<(String, Vec<Zeroizing<Vec<u8>>>)>) -> Option<Redactor> {
        let mut needles = Vec::new();
        let mut names = Vec::new();
        for (i, (name, forms)) in grants.into_iter().enumerate() {
            names.push(name);
            for f in forms {
                if !f.is_empty() && !f.iter().all(|&b| b == MASK) {
                    needles.push((f, i));
                }
            }
        }
        if needles.is_empty() {
            return None;
        }
        // Longest first: a Basic form is found whole, not as a shorter
        // match inside it.
        needles.sort_by_key(|n| std::cmp::Reverse(n.0.len()));
        let longest = needles[0].0.len();
        let mut first = [false; 256];
        for (n, _) in &needles {
            first[n[0] as usize] = true;
        }
        Some(Redactor {
            needles,
            names,
            longest,
            first,
        })
    }

    /// Masks every occurrence in `buf`; returns the grants found.
    pub fn mask(&self, buf: &mut [u8]) -> Vec<usize> {
        let mut hits = Vec::new();
        let mut i = 0;
        while i < buf.len() {
            if self.first[buf[i] as usize] {
                if let Some((n, g)) = self.needles.iter().find(|(n, _)| buf[i..].starts_with(n)) {
                    buf[i..i + n.len()].fill(MASK);
                    if !hits.contains(g) {
                        hits.push(*g);
                    }
                    i += n.len();
                    continue;
                }
            }
            i += 1;
        }
        hits
    }

    pub fn name(&self, g: usize) -> &str {
        &self.names[g]
    }

    /// Masks tokens in header values; returns the grants found.
    pub fn headers(&self, headers: &mut HeaderMap) -> Vec<usize> {
        let mut hits = Vec::new();
        for v in headers.values_mut() {
            let mut bytes = v.as_bytes().to_vec();
            let found = self.mask(&mut bytes);
            if !found.is_empty() {
                // Masking keeps a valid value valid: `*` is a legal byte.
                if let Ok(nv) = HeaderValue::from_bytes(&bytes) {
                    *v = nv;
                } else {
                    *v = HeaderValue::from_static("");
                }
                for g in found {
                    if !hits.contains(&g) {
                        hits.push(g);
                    }
                }
            }
        }
        hits
    }
}

/// The state of one streamed body.
pub(crate) struct Stream {
    r: Arc<Redactor>,
    carry: Vec<u8>,
}

impl Stream {
    pub fn new(r: Arc<Redactor>) -> Stream {
        Stream {
            r,
            carry: Vec::new(),
        }
    }

    /// Takes the next chunk; returns what can be sent now and the grants
    /// found.
    pub fn push(&mut self, chunk: &[u8]) -> (Bytes, Vec<usize>) {
        self.carry.extend_from_slice(chunk);
        let hits = self.r.mask(&mut self.carry);
        let keep = (self.r.longest - 1).min(self.carry.len());
        let tail = self.carry.split_off(self.carry.len() - keep);
        let out = std::mem::replace(&mut self.carry, tail);
        (Bytes::from(out), hits)
    }

    /// The held-back tail, at the end of the body (already scanned).
    pub fn finish(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.carry))
    }
}

/// A response body with tokens masked.
pub(crate) struct RedactBody {
    inner: ProxyBody,
    stream: Stream,
    rec: Arc<Record>,
    /// Trailers that arrived while the tail was still held back.
    trailers: Option<Frame<Bytes>>,
    done: bool,
}

impl RedactBody {
    pub fn new(inner: ProxyBody, r: Arc<Redactor>, rec: Arc<Record>) -> RedactBody {
        RedactBody {
            inner,
            stream: Stream::new(r),
            rec,
            trailers: None,
            done: false,
        }
    }

    fn note(&self, hits: Vec<usize>) {
        for g in hits {
            self.rec.credential(self.stream.r.name(g), "redact");
        }
    }
}

impl Body for RedactBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(t) = this.trailers.take() {
                return Poll::Ready(Some(Ok(t)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let (out, hits) = this.stream.push(&data);
                        this.note(hits);
                        if !out.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(trailers) => {
                        let tail = this.stream.finish();
                        if tail.is_empty() {
                            return Poll::Ready(Some(Ok(trailers)));
                        }
                        this.trailers = Some(trailers);
                        return Poll::Ready(Some(Ok(Frame::data(tail))));
                    }
                },
                Poll::Ready(None) => {
                    this.done = true;
                    let tail = this.stream.finish();
                    if !tail.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(tail))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none() && self.stream.carry.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        // The mask keeps the length.
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(forms: &[&str]) -> Arc<Redactor> {
        Arc::new(
            Redactor::new(vec![(
                "gh".into(),
                forms
                    .iter()
                    .map(|f| Zeroizing::new(f.as_bytes().to_vec()))
                    .collect(),
            )])
            .unwrap(),
        )
    }

    fn stream_all(r: &Arc<Redactor>, chunks: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut s = Stream::new(Arc::clone(r));
        let mut out = Vec::new();
        let mut hit = false;
        for c in chunks {
            let (b, h) = s.push(c);
            hit |= !h.is_empty();
            out.extend_from_slice(&b);
        }
        out.extend_from_slice(&s.finish());
        (out, hit)
    }

    #[test]
    fn masks_in_one_chunk_keeping_length() {
        let r = redactor(&["ghp_SECRET"]);
        let (out, hit) = stream_all(&r, &[b"a ghp_SECRET b ghp_SECRET"]);
        assert_eq!(out, b"a ********** b **********");
        assert!(hit);
    }

    #[test]
    fn every_split_of_the_token_across_chunks_is_masked() {
        let r = redactor(&["ghp_SECRET", "Z2hwX1NFQ1JFVA=="]);
        let text = b"xx ghp_SECRET yy Z2hwX1NFQ1JFVA== zz";
        let want = b"xx ********** yy **************** zz";
        for i in 0..=text.len() {
            for j in i..=text.len() {
                let (out, hit) = stream_all(&r, &[&text[..i], &text[i..j], &text[j..]]);
                assert_eq!(out, want, "split at {i},{j}");
                assert!(hit);
            }
        }
        // One byte at a time.
        let chunks: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(stream_all(&r, &chunks).0, want);
    }

    #[test]
    fn nothing_held_beyond_the_token_length() {
        let r = redactor(&["ghp_SECRET"]);
        let mut s = Stream::new(Arc::clone(&r));
        let (out, _) = s.push(&[b'm'; 100_000]);
        assert_eq!(out.len(), 100_000 - 9);
        assert_eq!(s.finish().len(), 9);
        let (out, _) = stream_all(&r, &[b"ghp_SECRE"]);
        assert_eq!(out, b"ghp_SECRE", "a prefix alone is not the token");
    }

    #[test]
    fn headers_are_masked() {
        let r = redactor(&["ghp_SECRET"]);
        let mut h = HeaderMap::new();
        h.insert("x-echo", HeaderValue::from_static("Bearer ghp_SECRET"));
        h.insert("x-other", HeaderValue::from_static("fine"));
        let hits = r.headers(&mut h);
        assert_eq!(hits, [0]);
        assert_eq!(h["x-echo"], "Bearer **********");
        assert_eq!(h["x-other"], "fine");
    }
}
