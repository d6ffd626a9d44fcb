//! Reading an SFTP session (`sftp`, and `scp`, which speaks SFTP) as it
//! passes: every request that names a path is decided before it reaches
//! the target. Reads and writes of an open file were decided when it was
//! opened (the target's own file modes hold the handle to them).
//!
//! Packet types come from `russh-sftp`; only the frame header is read on
//! the data path (READ, WRITE, DATA), whose bytes pass through as slices of
//! what arrived, so large transfers cost one header read per packet.

use bytes::{Buf, Bytes, BytesMut};
use portcullis_core::SftpOp;
use russh_sftp::protocol::{OpenFlags, Packet, Status, StatusCode};
use std::collections::{HashMap, HashSet};

/// OpenSSH's largest SFTP message is 256 KiB; anything far larger is not a
/// client we know.
const MAX_FRAME: usize = 4 << 20;

const CLOSE: u8 = 4;
const FSETSTAT: u8 = 10;
const REALPATH: u8 = 16;
const HANDLE: u8 = 102;
const STATUS: u8 = 101;

/// One direction of an SFTP session, cut at frame boundaries without
/// copying the bulk: the data of READ, WRITE and DATA frames passes through
/// as slices of what arrived; only the frames that are inspected (small:
/// requests that name paths, handles, statuses) are gathered whole.
#[derive(Default)]
pub(crate) struct Stream {
    /// The start of the next frame's header (length and type), while
    /// incomplete.
    head: Vec<u8>,
    /// Bytes of the current frame that pass through untouched.
    passing: usize,
    /// A frame being gathered whole, and its full length.
    whole: Option<(usize, BytesMut)>,
}

/// A piece of the stream, in order.
pub(crate) enum Piece {
    /// Bytes that go on as they are.
    Pass(Bytes),
    /// One whole frame, length included, to inspect.
    Frame(Bytes),
    /// A frame that passes untouched starts (its bytes are in `Pass`
    /// pieces, this one or later): its type and request id, which tell
    /// which requests are unanswered.
    Starts { kind: u8, id: u32 },
}

/// A frame's length, type and request id (or version): what is read of
/// every frame.
const HEAD: usize = 9;

impl Stream {
    /// Cuts `data` into pieces. `untouched(kind)` says which frame types
    /// pass without being gathered. What passes comes out as few slices of
    /// `data` as possible (one, when nothing in it is inspected).
    pub(crate) fn feed(
        &mut self,
        data: Bytes,
        untouched: fn(u8) -> bool,
        out: &mut Vec<Piece>,
    ) -> Result<(), String> {
        let end = data.len();
        let mut at = 0;
        // The start of the run of passing bytes that ends at `at`.
        let mut run = 0;
        let flush = |out: &mut Vec<Piece>, from: usize, to: usize| {
            if to > from {
                out.push(Piece::Pass(data.slice(from..to)));
            }
        };
        while at < end {
            if self.passing > 0 {
                let n = self.passing.min(end - at);
                self.passing -= n;
                at += n;
                continue;
            }
            if let Some((total, buf)) = &mut self.whole {
                let n = (*total - buf.len()).min(end - at);
                buf.extend_from_slice(&data[at..at + n]);
                at += n;
                run = at;
                if buf.len() == *total {
                    let frame = std::mem::take(buf).freeze();
                    self.whole = None;
                    out.push(Piece::Frame(frame));
                }
                continue;
            }
            if self.head.is_empty() && end - at >= HEAD {
                let len = frame_len(&data[at..at + 4])?;
                if untouched(data[at + 4]) {
                    out.push(starts(&data[at..at + HEAD]));
                    // Stays in the run.
                    self.passing = 4 + len;
                    continue;
                }
                flush(out, run, at);
                if end - at >= 4 + len {
                    out.push(Piece::Frame(data.slice(at..at + 4 + len)));
                    at += 4 + len;
                } else {
                    let mut buf = BytesMut::with_capacity(4 + len);
                    buf.extend_from_slice(&data[at..]);
                    self.whole = Some((4 + len, buf));
                    at = end;
                }
                run = at;
                continue;
            }
            // A header cut between two chunks.
            flush(out, run, at);
            let n = (HEAD - self.head.len()).min(end - at);
            self.head.extend_from_slice(&data[at..at + n]);
            at += n;
            run = at;
            if self.head.len() < HEAD {
                continue;
            }
            let head = std::mem::take(&mut self.head);
            let len = frame_len(&head[..4])?;
            if untouched(head[4]) {
                out.push(starts(&head));
                out.push(Piece::Pass(Bytes::from(head)));
                self.passing = len + 4 - HEAD;
            } else {
                let mut buf = BytesMut::with_capacity(4 + len);
                buf.extend_from_slice(&head);
                if buf.len() == 4 + len {
                    out.push(Piece::Frame(buf.freeze()));
                } else {
                    self.whole = Some((4 + len, buf));
                }
            }
        }
        flush(out, run, at);
        Ok(())
    }

    /// Whether the stream stands between two frames, where the gateway
    /// may write one of its own.
    pub(crate) fn at_boundary(&self) -> bool {
        self.passing == 0 && self.whole.is_none() && self.head.is_empty()
    }
}

/// A frame's length (after its 4-byte length field), checked.
/// The [`Piece::Starts`] of a frame whose first [`HEAD`] bytes are `head`.
fn starts(head: &[u8]) -> Piece {
    Piece::Starts {
        kind: head[4],
        id: u32::from_be_bytes([head[5], head[6], head[7], head[8]]),
    }
}

fn frame_len(field: &[u8]) -> Result<usize, String> {
    let len = match field {
        [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]) as usize,
        _ => return Err("a truncated SFTP length".into()),
    };
    // A type and a request id (or a version) at least.
    if !(5..=MAX_FRAME).contains(&len) {
        return Err(format!("an SFTP packet of {len} bytes is not accepted"));
    }
    Ok(len)
}

/// Requests that pass untouched: INIT, READ, WRITE, FSTAT, READDIR (the
/// handshake, and handles already decided).
pub(crate) fn untouched_request(kind: u8) -> bool {
    matches!(kind, 1 | 5 | 6 | 8 | 12)
}

/// Responses that pass untouched: all but HANDLE and STATUS, which say
/// which handle an open got.
pub(crate) fn untouched_response(kind: u8) -> bool {
    !matches!(kind, HANDLE | STATUS)
}

/// What the client asked, as far as the policy is concerned.
pub(crate) enum Request {
    /// Goes to the target undecided (the handshake, reads and writes of
    /// open handles, closing).
    Pass,
    /// Decided first; `id` answers a refusal.
    Decide { id: u32, ops: Vec<SftpOp> },
    /// Refused without a decision (not understood).
    Refuse { id: u32, reason: String },
    /// A breach of the protocol that leaves the session's state unknown:
    /// the session ends.
    End { reason: String },
}

/// What the caller keeps alive while a handle is open (the decisions it
/// was opened under), dropped when it closes or its open fails.
pub(crate) type Keep = Box<dyn Send>;

/// The open files and directories of one SFTP session, by handle.
#[derive(Default)]
pub(crate) struct Handles {
    /// Open requests sent, waiting for their handle: request id to path.
    pending: HashMap<u32, (String, Option<Keep>)>,
    /// The ids of every request sent and not yet answered.
    outstanding: HashSet<u32>,
    open: HashMap<Vec<u8>, (String, Option<Keep>)>,
}

impl Handles {
    /// A request from the client.
    pub(crate) fn request(&mut self, frame: &[u8]) -> Request {
        let kind = frame.get(4).copied().unwrap_or(0);
        let id = frame
            .get(5..9)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        if let Err(reason) = self.starts_request(kind, id) {
            return Request::End { reason };
        }
        match kind {
            // INIT, READ, WRITE, FSTAT, READDIR: the handshake and open handles.
            1 | 5 | 6 | 8 | 12 => return Request::Pass,
            CLOSE => {
                if let Some(handle) = string_at(frame, 9) {
                    self.open.remove(handle);
                }
                return Request::Pass;
            }
            FSETSTAT => {
                let path = string_at(frame, 9)
                    .and_then(|h| self.open.get(h))
                    .map(|(path, _)| path.clone());
                return match path {
                    Some(path) => decided(id, vec![op("setstat", path, None)], false),
                    None => Request::Refuse {
                        id,
                        reason: "unknown handle".into(),
                    },
                };
            }
            _ => {}
        }
        // Only the requests that name paths are decoded (small ones).
        let mut body = Bytes::copy_from_slice(frame.get(4..).unwrap_or_default());
        let packet = match Packet::try_from(&mut body) {
            Ok(packet) => packet,
            Err(e) => {
                return Request::Refuse {
                    id,
                    reason: format!(
                        "the request could not be read ({e}); file names must be UTF-8"
                    ),
                }
            }
        };
        let ops = match packet {
            Packet::Open(open) => {
                let flags = open.pflags;
                let mut ops = Vec::new();
                if flags.contains(OpenFlags::READ) {
                    ops.push(op("read", open.filename.clone(), None));
                }
                if flags.intersects(
                    OpenFlags::WRITE | OpenFlags::APPEND | OpenFlags::CREATE | OpenFlags::TRUNCATE,
                ) || ops.is_empty()
                {
                    ops.push(op("write", open.filename.clone(), None));
                }
                self.pending.insert(id, (open.filename, None));
                ops
            }
            Packet::OpenDir(d) => {
                self.pending.insert(id, (d.path.clone(), None));
                vec![op("list", d.path, None)]
            }
            Packet::Remove(r) => vec![op("remove", r.filename, None)],
            Packet::MkDir(m) => vec![op("mkdir", m.path, None)],
            Packet::RmDir(r) => vec![op("rmdir", r.path, None)],
            Packet::SetStat(s) => vec![op("setstat", s.path, None)],
            Packet::Stat(s) => vec![op("stat", s.path, None)],
            Packet::Lstat(s) => vec![op("stat", s.path, None)],
            Packet::RealPath(s) => vec![op("stat", s.path, None)],
            Packet::ReadLink(s) => vec![op("readlink", s.path, None)],
            Packet::Rename(r) => vec![op("rename", r.oldpath, Some(r.newpath))],
            // The new link (`path`) and what it points to (`to`). OpenSSH
            // sends them in the reverse of the draft's order, which is how
            // these fields are read here.
            Packet::Symlink(s) => vec![op("symlink", s.targetpath, Some(s.linkpath))],
            Packet::Extended(e) => return extended(id, &e.request, &e.data),
            _ => {
                return Request::Refuse {
                    id,
                    reason: "this SFTP request is not supported through the gateway".into(),
                }
            }
        };
        decided(id, ops, kind == REALPATH)
    }

    /// Keeps `keep` alive as long as the handle that open request `id`
    /// gets stays open; `false` (and `keep` dropped) when `id` opens
    /// nothing.
    pub(crate) fn keep(&mut self, id: u32, keep: Keep) -> bool {
        match self.pending.get_mut(&id) {
            Some((_, slot)) => {
                *slot = Some(keep);
                true
            }
            None => false,
        }
    }

    /// Whether request `id` opens a file or directory, and waits for its
    /// handle.
    pub(crate) fn opens(&self, id: u32) -> bool {
        self.pending.contains_key(&id)
    }

    /// A response from the target: a handle for an open request is
    /// remembered with its path.
    pub(crate) fn response(&mut self, frame: &[u8]) {
        let kind = frame.get(4).copied().unwrap_or(0);
        let id = frame
            .get(5..9)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if let Some(id) = id {
            self.starts_response(kind, id);
        }
        match (kind, id) {
            (HANDLE, Some(id)) => {
                if let (Some(opened), Some(handle)) =
                    (self.pending.remove(&id), string_at(frame, 9))
                {
                    self.open.insert(handle.to_vec(), opened);
                }
            }
            (STATUS, Some(id)) => {
                self.pending.remove(&id);
            }
            _ => {}
        }
    }

    /// A request starts: its id must not be one still unanswered, or an
    /// answer could be taken for another request's (an open's record
    /// cleared, its handle pinned to another path). INIT's field is the
    /// version, not an id.
    pub(crate) fn starts_request(&mut self, kind: u8, id: u32) -> Result<(), String> {
        if kind != 1 && !self.outstanding.insert(id) {
            return Err(format!(
                "request id {id} was reused while a request with it was pending"
            ));
        }
        Ok(())
    }

    /// A response starts: its request is answered.
    pub(crate) fn starts_response(&mut self, kind: u8, id: u32) {
        // VERSION answers INIT, which has no id.
        if kind != 2 {
            self.outstanding.remove(&id);
        }
    }

    /// The path a refused request named is no longer pending.
    pub(crate) fn refused(&mut self, id: u32) {
        self.pending.remove(&id);
        self.outstanding.remove(&id);
    }
}

/// OpenSSH's extensions: the ones that name paths are decided, the
/// harmless ones pass, the rest are refused.
fn extended(id: u32, request: &str, data: &[u8]) -> Request {
    let mut data = Bytes::copy_from_slice(data);
    let mut path = || -> Option<String> {
        if data.remaining() < 4 {
            return None;
        }
        let len = data.get_u32() as usize;
        if data.remaining() < len {
            return None;
        }
        String::from_utf8(data.split_to(len).to_vec()).ok()
    };
    let names_only = request == "expand-path@openssh.com";
    let ops = match request {
        "posix-rename@openssh.com" => match (path(), path()) {
            (Some(from), Some(to)) => vec![op("rename", from, Some(to))],
            _ => return malformed(id),
        },
        // A new name (`path`) for an existing file (`to`).
        "hardlink@openssh.com" => match (path(), path()) {
            (Some(existing), Some(link)) => vec![op("link", link, Some(existing))],
            _ => return malformed(id),
        },
        "lsetstat@openssh.com" => match path() {
            Some(p) => vec![op("setstat", p, None)],
            None => return malformed(id),
        },
        "statvfs@openssh.com" | "expand-path@openssh.com" => match path() {
            Some(p) => vec![op("stat", p, None)],
            None => return malformed(id),
        },
        "limits@openssh.com"
        | "fstatvfs@openssh.com"
        | "fsync@openssh.com"
        | "users-groups-by-id@openssh.com"
        | "home-directory" => return Request::Pass,
        other => {
            return Request::Refuse {
                id,
                reason: format!(
                    "the SFTP extension `{other}` is not supported through the gateway"
                ),
            }
        }
    };
    decided(id, ops, names_only)
}

/// The request's operations, for the policy to decide, on their paths as
/// [`normalize`] gives them; refused if a path climbs with `..`.
///
/// The target resolves `..` after the symbolic links before it: with
/// `/tmp/d/l` a link to `/tmp`, `/tmp/d/l/../etc` is `/etc` to the target
/// but `/tmp/d/etc` by its text. Which names are links is the target's to
/// know, so a path with `..` cannot be decided by its name, and is refused;
/// a link whose target climbs is refused as well. A request that only asks
/// what a name resolves to (`names_only`: REALPATH, which clients send for
/// `cd ..`, and `expand-path`) passes to the policy as before: clients then
/// use the answer, which has no `..`.
fn decided(id: u32, ops: Vec<SftpOp>, names_only: bool) -> Request {
    // The target's server reads a path up to its first NUL: `/tmp/..\0` is
    // `/tmp/..` to it, and not `..` to the check below.
    if ops
        .iter()
        .flat_map(|op| std::iter::once(&op.path).chain(&op.to))
        .any(|path| path.contains('\0'))
    {
        return Request::Refuse {
            id,
            reason: "a path with a NUL byte is refused".into(),
        };
    }
    if !names_only {
        let climbing = ops
            .iter()
            .flat_map(|op| std::iter::once(&op.path).chain(&op.to))
            .find(|path| path.split('/').any(|part| part == ".."));
        if let Some(path) = climbing {
            return Request::Refuse {
                id,
                reason: format!(
                    "`{path}` climbs with `..`, which the target resolves through its \
                     symbolic links: name the path without `..`"
                ),
            };
        }
    }
    let ops = ops
        .into_iter()
        .map(|op| SftpOp {
            path: normalize(&op.path),
            to: op.to.as_deref().map(normalize),
            ..op
        })
        .collect();
    Request::Decide { id, ops }
}

fn malformed(id: u32) -> Request {
    Request::Refuse {
        id,
        reason: "a malformed request".into(),
    }
}

/// An operation on the paths as the client named them ([`decided`]
/// normalizes them).
fn op(operation: &str, path: String, to: Option<String>) -> SftpOp {
    SftpOp {
        operation: operation.into(),
        path,
        to,
    }
}

/// A path as policies see it: `.`, `..` and repeated slashes resolved by
/// their text, so that `/tmp/../etc/passwd` is `/etc/passwd`. (Symbolic
/// links are the target's to resolve: a policy on paths is a policy on
/// names, and the relay refuses paths with `..`, see [`decided`].) A
/// relative path, which the target resolves from the login's home
/// directory, stays relative, and matches no absolute pattern.
pub fn normalize(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            part => parts.push(part),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// The SSH string at `at` in a frame.
fn string_at(frame: &[u8], at: usize) -> Option<&[u8]> {
    let len = frame.get(at..at + 4)?;
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    frame.get(at + 4..at + 4 + len)
}

/// A STATUS frame refusing request `id`.
pub(crate) fn permission_denied(id: u32, message: &str) -> Bytes {
    let status = Packet::Status(Status {
        id,
        status_code: StatusCode::PermissionDenied,
        error_message: message.to_string(),
        language_tag: "en".to_string(),
    });
    Bytes::try_from(status).unwrap_or_else(|_| {
        // A status has nothing that can fail to encode; keep a valid frame
        // if it ever does.
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&21u32.to_be_bytes());
        frame.extend_from_slice(&[STATUS]);
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(&(StatusCode::PermissionDenied as u32).to_be_bytes());
        frame.extend_from_slice(&0u32.to_be_bytes());
        frame.extend_from_slice(&0u32.to_be_bytes());
        frame.freeze()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    const OPEN: u8 = 3;

    fn frame(kind: u8, id: u32, body: &[u8]) -> Bytes {
        let mut f = BytesMut::new();
        f.extend_from_slice(&((body.len() + 5) as u32).to_be_bytes());
        f.extend_from_slice(&[kind]);
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(body);
        f.freeze()
    }

    fn string(s: &[u8]) -> Vec<u8> {
        let mut v = (s.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(s);
        v
    }

    #[test]
    fn frames_are_cut_from_a_stream_in_pieces() {
        let open = frame(
            OPEN,
            1,
            &[
                string(b"/tmp/x"),
                2u32.to_be_bytes().to_vec(),
                0u32.to_be_bytes().to_vec(),
            ]
            .concat(),
        );
        let write = frame(
            6,
            2,
            &[
                string(&[0, 0, 0, 1]),
                0u64.to_be_bytes().to_vec(),
                string(&[7u8; 1000]),
            ]
            .concat(),
        );
        let mut stream_bytes = open.to_vec();
        stream_bytes.extend_from_slice(&write);
        // Fed in awkward pieces: the OPEN comes out whole, the WRITE passes
        // as slices, and the whole stream comes out unchanged.
        let mut stream = Stream::default();
        let mut pieces = Vec::new();
        for chunk in stream_bytes.chunks(7) {
            stream
                .feed(
                    Bytes::copy_from_slice(chunk),
                    untouched_request,
                    &mut pieces,
                )
                .unwrap();
        }
        assert!(stream.at_boundary());
        let mut whole = Vec::new();
        let mut frames = Vec::new();
        let mut starts = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Pass(b) => whole.extend_from_slice(&b),
                Piece::Frame(f) => {
                    whole.extend_from_slice(&f);
                    frames.push(f);
                }
                Piece::Starts { kind, id } => starts.push((kind, id)),
            }
        }
        assert_eq!(whole, stream_bytes);
        assert_eq!(frames, [open]);
        // The WRITE's type and id, read across the cut.
        assert_eq!(starts, [(6, 2)]);
        let mut huge = Stream::default();
        assert!(huge
            .feed(
                Bytes::from(vec![0xff; 9]),
                untouched_request,
                &mut Vec::new()
            )
            .is_err());
        // Writes only, in one chunk: one slice, not a copy.
        let mut writes = write.to_vec();
        writes.extend_from_slice(&write);
        let chunk = Bytes::from(writes);
        let mut pieces = Vec::new();
        Stream::default()
            .feed(chunk.clone(), untouched_request, &mut pieces)
            .unwrap();
        let passed: Vec<&Bytes> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Pass(b) => Some(b),
                _ => None,
            })
            .collect();
        assert!(
            matches!(&passed[..], [b] if b.as_ptr() == chunk.as_ptr() && b.len() == chunk.len())
        );
    }

    #[test]
    fn an_open_for_writing_is_a_write_and_its_handle_keeps_the_path() {
        let mut handles = Handles::default();
        let mut body = string(b"/etc/passwd");
        body.extend_from_slice(&(0x02u32 | 0x08 | 0x10).to_be_bytes());
        body.extend_from_slice(&0u32.to_be_bytes());
        let Request::Decide { id, ops } = handles.request(&frame(OPEN, 7, &body)) else {
            panic!("not decided");
        };
        assert_eq!(id, 7);
        assert_eq!(ops, [op("write", "/etc/passwd".into(), None)]);
        // A binary handle, as OpenSSH's server gives.
        handles.response(&frame(HANDLE, 7, &string(&[0, 0, 0, 0xc8])));
        let Request::Decide { ops, .. } = handles.request(&frame(
            FSETSTAT,
            8,
            &[string(&[0, 0, 0, 0xc8]), 0u32.to_be_bytes().to_vec()].concat(),
        )) else {
            panic!("not decided");
        };
        assert_eq!(ops, [op("setstat", "/etc/passwd".into(), None)]);
        // Data on the handle passes.
        assert!(matches!(handles.request(&frame(6, 9, b"")), Request::Pass));
    }

    #[test]
    fn what_an_open_keeps_lives_until_its_handle_closes() {
        let kept = std::sync::Arc::new(());
        let mut handles = Handles::default();
        let mut body = string(b"/tmp/x");
        body.extend_from_slice(&0x02u32.to_be_bytes());
        body.extend_from_slice(&0u32.to_be_bytes());
        assert!(matches!(
            handles.request(&frame(OPEN, 7, &body)),
            Request::Decide { .. }
        ));
        assert!(handles.opens(7) && !handles.opens(8));
        assert!(handles.keep(7, Box::new(kept.clone())));
        assert!(!handles.keep(8, Box::new(kept.clone())), "8 opens nothing");
        assert_eq!(std::sync::Arc::strong_count(&kept), 2);
        handles.response(&frame(HANDLE, 7, &string(b"h1")));
        assert_eq!(std::sync::Arc::strong_count(&kept), 2, "kept while open");
        assert!(matches!(
            handles.request(&frame(CLOSE, 9, &string(b"h1"))),
            Request::Pass
        ));
        assert_eq!(std::sync::Arc::strong_count(&kept), 1, "dropped at close");
    }

    /// An id reused for a second open while the first is pending ends the
    /// session: refusing the second alone let a third open with that id
    /// take the first's handle for its own path.
    #[test]
    fn an_open_id_reused_while_pending_ends_the_session() {
        let mut handles = Handles::default();
        let open = |path: &[u8], flags: u32| {
            let mut body = string(path);
            body.extend_from_slice(&flags.to_be_bytes());
            body.extend_from_slice(&0u32.to_be_bytes());
            frame(OPEN, 1, &body)
        };
        assert!(matches!(
            handles.request(&open(b"/home/u/.bash_history", 0x01)),
            Request::Decide { .. }
        ));
        let Request::End { reason } = handles.request(&open(b"/tmp/decoy", 0x02 | 0x08)) else {
            panic!("the reused id was not the session's end");
        };
        assert!(reason.contains("reused"), "{reason}");
        // Any request with that id: a refused MKDIR would clear the record.
        let mkdir = frame(
            14,
            1,
            &[string(b"/etc/x"), 0u32.to_be_bytes().to_vec()].concat(),
        );
        assert!(matches!(handles.request(&mkdir), Request::End { .. }));
        // A READ passes untouched, but its id counts: its answer would
        // clear an open's record.
        assert!(handles.starts_request(5, 1).is_err());
        assert!(handles.starts_request(5, 9).is_ok());
        let mut open_nine = string(b"/tmp/x");
        open_nine.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
        assert!(matches!(
            handles.request(&frame(OPEN, 9, &open_nine)),
            Request::End { .. }
        ));
        // Once answered, an id is free again.
        handles.starts_response(103, 9);
        assert!(handles.starts_request(5, 9).is_ok());
    }

    #[test]
    fn paths_with_a_nul_are_refused() {
        let mut handles = Handles::default();
        let mut body = string(b"/tmp/l");
        body.extend(string(b"/tmp/..\0"));
        // SYMLINK (20), and REALPATH (16), which passes `..` otherwise.
        assert!(matches!(
            handles.request(&frame(20, 7, &body)),
            Request::Refuse { id: 7, .. }
        ));
        assert!(matches!(
            handles.request(&frame(16, 8, &string(b"/tmp/x\0/etc"))),
            Request::Refuse { id: 8, .. }
        ));
    }

    #[test]
    fn paths_that_climb_are_refused() {
        let mut handles = Handles::default();
        let mut open = string(b"/tmp/l/../../home/u/.bashrc");
        open.extend_from_slice(&(0x02u32 | 0x08).to_be_bytes());
        open.extend_from_slice(&0u32.to_be_bytes());
        // A link whose target climbs through another link: `/` to the
        // target, `/tmp/a` by its text.
        let symlink = [string(b"/tmp/a/b/c/l/../../.."), string(b"/tmp/root")].concat();
        for (id, kind, body) in [
            (1, OPEN, open),
            (2, 20, symlink),
            (3, 13, string(b"/tmp/x/..")),
        ] {
            let request = handles.request(&frame(kind, id, &body));
            let Request::Refuse { reason, .. } = request else {
                panic!("request {kind} was not refused");
            };
            assert!(reason.contains("climbs with `..`"), "{reason}");
        }
        // Asking what a name resolves to is how clients `cd ..`.
        let Request::Decide { ops, .. } = handles.request(&frame(16, 4, &string(b"/home/u/..")))
        else {
            panic!("REALPATH was not decided");
        };
        assert_eq!(ops, [op("stat", "/home".into(), None)]);
        // Other names are decided as they resolve by their text.
        let Request::Decide { ops, .. } = handles.request(&frame(
            14,
            5,
            &[string(b"/tmp//./d"), 0u32.to_be_bytes().to_vec()].concat(),
        )) else {
            panic!("MKDIR was not decided");
        };
        assert_eq!(ops, [op("mkdir", "/tmp/d".into(), None)]);
    }

    #[test]
    fn paths_are_seen_resolved() {
        assert_eq!(normalize("/tmp/../etc//passwd"), "/etc/passwd");
        assert_eq!(normalize("/../../etc/./shadow"), "/etc/shadow");
        assert_eq!(normalize("/tmp/"), "/tmp");
        assert_eq!(normalize("a/../../b"), "../b");
        assert_eq!(normalize("."), ".");
        assert_eq!(normalize(""), ".");
    }

    #[test]
    fn renames_and_unknown_extensions() {
        let mut handles = Handles::default();
        let body = [string(b"a"), string(b"b")].concat();
        let Request::Decide { ops, .. } = handles.request(&frame(18, 1, &body)) else {
            panic!("not decided");
        };
        assert_eq!(ops, [op("rename", "a".into(), Some("b".into()))]);
        let body = [string(b"copy-data"), string(b"x")].concat();
        assert!(matches!(
            handles.request(&frame(200, 2, &body)),
            Request::Refuse { .. }
        ));
        let status = permission_denied(3, "no");
        assert_eq!(status[4], STATUS);
        assert_eq!(&status[5..9], &3u32.to_be_bytes());
    }
}
