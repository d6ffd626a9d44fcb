//! Reading an SFTP session (`sftp`, and `scp`, which speaks SFTP) as it
//! passes: every request that names a path is decided before it reaches
//! the target. Reads and writes of an open file were decided when it was
//! opened (the target's own file modes hold the handle to them).
//!
//! Packet types come from `russh-sftp`; only the frame header is read on
//! the data path (READ, WRITE, DATA), so large transfers cost one length
//! check per packet.

use bytes::{Buf, Bytes, BytesMut};
use portcullis_core::SftpOp;
use russh_sftp::protocol::{OpenFlags, Packet, Status, StatusCode};
use std::collections::HashMap;

/// OpenSSH's largest SFTP message is 256 KiB; anything far larger is not a
/// client we know.
const MAX_FRAME: usize = 4 << 20;

const CLOSE: u8 = 4;
const FSETSTAT: u8 = 10;
const HANDLE: u8 = 102;
const STATUS: u8 = 101;

/// Whole frames out of a byte stream.
#[derive(Default)]
pub(crate) struct Frames {
    buf: BytesMut,
}

impl Frames {
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, length included. Frames taken one after the
    /// other are adjacent in memory: [`join`] puts them back together
    /// without copying.
    pub(crate) fn next(&mut self) -> Result<Option<BytesMut>, String> {
        let Some(header) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len == 0 || len > MAX_FRAME {
            return Err(format!("an SFTP packet of {len} bytes is not accepted"));
        }
        if self.buf.len() < 4 + len {
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(4 + len)))
    }
}

/// Appends `frame` to `out`: free when `frame` follows `out` in memory (as
/// successive frames of [`Frames`] do), a copy otherwise.
pub(crate) fn join(out: &mut Option<BytesMut>, frame: BytesMut) {
    match out {
        None => *out = Some(frame),
        Some(out) => out.unsplit(frame),
    }
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
}

/// The open files and directories of one SFTP session, by handle.
#[derive(Default)]
pub(crate) struct Handles {
    /// Open requests sent, waiting for their handle: request id to path.
    pending: HashMap<u32, String>,
    open: HashMap<Vec<u8>, String>,
}

impl Handles {
    /// A request from the client.
    pub(crate) fn request(&mut self, frame: &[u8]) -> Request {
        let kind = frame.get(4).copied().unwrap_or(0);
        let id = frame
            .get(5..9)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
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
                let path = string_at(frame, 9).and_then(|h| self.open.get(h)).cloned();
                return match path {
                    Some(path) => Request::Decide {
                        id,
                        ops: vec![op("setstat", path, None)],
                    },
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
        // A request id names one pending open: reusing it would pin the
        // handle the target gives to another path.
        if matches!(packet, Packet::Open(_) | Packet::OpenDir(_)) && self.pending.contains_key(&id)
        {
            return Request::Refuse {
                id,
                reason: "a request id already in use".into(),
            };
        }
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
                self.pending.insert(id, open.filename);
                ops
            }
            Packet::OpenDir(d) => {
                self.pending.insert(id, d.path.clone());
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
        Request::Decide { id, ops }
    }

    /// A response from the target: a handle for an open request is
    /// remembered with its path.
    pub(crate) fn response(&mut self, frame: &[u8]) {
        let kind = frame.get(4).copied().unwrap_or(0);
        let id = frame
            .get(5..9)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        match (kind, id) {
            (HANDLE, Some(id)) => {
                if let (Some(path), Some(handle)) = (self.pending.remove(&id), string_at(frame, 9))
                {
                    self.open.insert(handle.to_vec(), path);
                }
            }
            (STATUS, Some(id)) => {
                self.pending.remove(&id);
            }
            _ => {}
        }
    }

    /// The path a refused request named is no longer pending.
    pub(crate) fn refused(&mut self, id: u32) {
        self.pending.remove(&id);
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
    Request::Decide { id, ops }
}

fn malformed(id: u32) -> Request {
    Request::Refuse {
        id,
        reason: "a malformed request".into(),
    }
}

fn op(operation: &str, path: String, to: Option<String>) -> SftpOp {
    SftpOp {
        operation: operation.into(),
        path: normalize(&path),
        to: to.as_deref().map(normalize),
    }
}

/// A path as policies see it: `.`, `..` and repeated slashes resolved by
/// their text, so that `/tmp/../etc/passwd` is `/etc/passwd`. (Symbolic
/// links are the target's to resolve: a policy on paths is a policy on
/// names.) A relative path, which the target resolves from the login's
/// home directory, stays relative, and matches no absolute pattern.
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
        let a = frame(OPEN, 1, b"xx");
        let b = frame(CLOSE, 2, b"");
        let mut stream = a.to_vec();
        stream.extend_from_slice(&b);
        let mut frames = Frames::default();
        frames.push(&stream[..3]);
        assert!(frames.next().unwrap().is_none());
        frames.push(&stream[3..]);
        assert_eq!(frames.next().unwrap().unwrap(), a);
        assert_eq!(frames.next().unwrap().unwrap(), b);
        assert!(frames.next().unwrap().is_none());
        let mut huge = Frames::default();
        huge.push(&u32::MAX.to_be_bytes());
        assert!(huge.next().is_err());
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
