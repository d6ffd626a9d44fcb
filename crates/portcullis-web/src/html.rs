//! The console's pages. Everything that came from a person or a client
//! (statements, reasons, comments, names) is escaped.

use portcullis_approval::{model, Request, Status, Subject};
use portcullis_core::Principal;
use std::fmt::Write;

pub(crate) const SCRIPT: &str = r#"// Live updates: on each change of a request, fetch this page's live part again.
(function () {
  // A recorded terminal: the asciinema player, fed the session's asciicast.
  const player = document.getElementById('player');
  if (player && window.AsciinemaPlayer) {
    window.AsciinemaPlayer.create(player.dataset.cast, player, { autoPlay: true, preload: true, fit: 'width' });
  }
  const live = document.getElementById('live');
  if (!live) return;
  // A running session's replay: fetched again until it ends.
  const poll = Number(live.dataset.poll || 0);
  if (poll > 0) {
    const timer = setInterval(async function () {
      const response = await fetch(window.location.pathname + '?fragment=1', { credentials: 'same-origin' });
      if (!response.ok) return;
      live.innerHTML = await response.text();
      if (!live.textContent.includes('this page follows it')) clearInterval(timer);
    }, poll);
    return;
  }
  if (!window.EventSource) return;
  const source = new EventSource('/events');
  let busy = false;
  source.addEventListener('request', async function () {
    if (busy) return;
    busy = true;
    try {
      const url = window.location.pathname + '?fragment=1';
      const response = await fetch(url, { credentials: 'same-origin' });
      if (response.ok) live.innerHTML = await response.text();
      if (response.ok && document.getElementById('decision-form') &&
          !live.querySelector('[data-status="pending"]')) {
        document.getElementById('decision-form').remove();
      }
    } finally {
      busy = false;
    }
  });
})();
"#;

pub(crate) const STYLE: &str = r#"body { font-family: system-ui, sans-serif; margin: 0; color: #1d2329; background: #f6f7f9; }
header { background: #1d2329; color: #fff; padding: .6rem 1.2rem; display: flex; gap: 1.2rem; align-items: center; }
header a { color: #fff; } header form { margin-left: auto; } header .who { opacity: .8; }
main { max-width: 60rem; margin: 1.5rem auto; padding: 0 1.2rem; }
.card { background: #fff; border: 1px solid #d8dde3; border-radius: 6px; padding: 1rem 1.2rem; margin-bottom: 1rem; }
ul.requests { list-style: none; padding: 0; } ul.requests li { margin: .4rem 0; }
a.request { display: block; background: #fff; border: 1px solid #d8dde3; border-radius: 6px; padding: .6rem .9rem; text-decoration: none; color: inherit; }
a.request:hover { border-color: #5b7ba8; }
pre { background: #f0f2f5; padding: .7rem; border-radius: 4px; white-space: pre-wrap; word-break: break-word; overflow-wrap: anywhere; }
dl { display: grid; grid-template-columns: 10rem minmax(0, 1fr); gap: .3rem .8rem; } dt { font-weight: 600; }
dd { margin: 0; min-width: 0; overflow-wrap: anywhere; }
a.request code { white-space: pre-wrap; overflow-wrap: anywhere; }
/* What users wrote is drawn in the order it is stored, as the database or the
   shell reads it: right-to-left letters do not turn the text around them. */
main pre, main code, main dd, a.request { unicode-bidi: bidi-override; direction: ltr; }
.status { font-weight: 700; text-transform: uppercase; }
.status.pending { color: #9a6700; } .status.approved { color: #1a7f37; } .status.denied, .status.expired, .status.cancelled, .status.revoked { color: #cf222e; }
.error { background: #ffebe9; border-color: #ff8182; }
textarea { width: 100%; min-height: 4rem; box-sizing: border-box; }
button { padding: .4rem 1rem; margin-right: .5rem; }
"#;

pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Not drawn as itself (a direction change, a blank, a control
            // character): named instead, so the page shows what runs.
            c if portcullis_core::text::is_unshown(c) => {
                out.push_str(&portcullis_core::text::named(c))
            }
            c => out.push(c),
        }
    }
    out
}

/// A note under a long text, that it goes on: lines of comments, unlike
/// blank ones, are not folded, and can push the rest of a statement down.
fn line_count(text: &str) -> String {
    match text.lines().count() {
        n if n > 10 => format!(r#"<small id="lines">{n} lines: read it to its end</small>"#),
        _ => String::new(),
    }
}

/// `text` with each run of two or more blank lines folded into one line
/// that counts them: a statement cannot push its rest out of sight.
pub(crate) fn folded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0usize;
    let flush = |out: &mut String, blank: &mut usize| {
        match *blank {
            0 => {}
            1 => out.push('\n'),
            n => out.push_str(&format!("[{n} blank lines]\n")),
        }
        *blank = 0;
    };
    for line in text.split_inclusive('\n') {
        // Blank as PostgreSQL and the shell read it: a no-break space is
        // a name to them, and stays on the page with its marker.
        if line.trim_ascii().is_empty() && line.ends_with('\n') {
            blank += 1;
            continue;
        }
        flush(&mut out, &mut blank);
        out.push_str(line);
    }
    flush(&mut out, &mut blank);
    out
}

/// Whether what the requester wrote holds characters [`escape`] names.
fn asks_with_unshown(request: &Request) -> bool {
    use portcullis_core::text::has_unshown;
    let requester = &request.requester;
    let mut texts = vec![requester.id.as_str(), requester.subject.as_str()];
    texts.extend(request.reason.as_deref());
    if let Subject::Statement {
        text,
        prepared,
        batch,
        parameters,
        ..
    } = &request.subject
    {
        texts.push(text);
        texts.extend(prepared.as_deref());
        texts.extend(batch.as_deref());
        texts.extend(parameters.iter().flatten().map(String::as_str));
    }
    texts.into_iter().any(has_unshown)
}

pub(crate) fn layout(title: &str, who: &Principal, csrf: &str, body: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · Portcullis</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/console.css"></head>
<body><header><strong>Portcullis</strong><a href="/">Inbox</a><a href="/history">History</a><a href="/sessions">Sessions</a>
<span class="who">{who} ({groups})</span>
<form method="post" action="/logout"><input type="hidden" name="csrf" value="{csrf}"><button>Log out</button></form></header>
<main><h1>{title}</h1>{body}</main>
<script src="/static/console.js"></script></body></html>"#,
        title = escape(title),
        who = escape(&who.id),
        groups = escape(&who.groups.join(", ")),
        csrf = escape(csrf),
    )
}

pub(crate) fn error_page(message: &str) -> String {
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Portcullis</title>
<link rel="stylesheet" href="/static/console.css"></head><body><main>
<div class="card error" id="error">{}</div><p><a href="/">Back to the inbox</a></p></main></body></html>"#,
        escape(message)
    )
}

pub(crate) fn logged_out() -> String {
    r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Portcullis</title>
<link rel="stylesheet" href="/static/console.css"></head><body><main>
<div class="card">You are logged out. <a href="/login">Log in again</a>.</div></main></body></html>"#
        .into()
}

/// The part of a page that `console.js` fetches again on each change.
pub(crate) fn live(inner: &str) -> String {
    format!(r#"<div id="live">{inner}</div>"#)
}

/// A live part fetched again every two seconds while `running`.
pub(crate) fn live_polled(inner: &str, running: bool) -> String {
    format!(
        r#"<div id="live" data-poll="{}">{inner}</div>"#,
        if running { "2000" } else { "" }
    )
}

/// The player of a recorded terminal, fed `cast`.
pub(crate) fn player(cast: &str) -> String {
    format!(
        r#"<link rel="stylesheet" href="/static/asciinema-player.css"><div id="player" data-cast="{}"></div><script src="/static/asciinema-player.min.js"></script>"#,
        escape(cast)
    )
}

/// A recorded session as `portcullis replay` prints it, with whether a
/// finished recording verifies.
pub(crate) fn replay(text: &str, running: bool, verified: Option<Result<(), String>>) -> String {
    let check = match verified {
        None => String::new(),
        Some(Ok(())) => {
            r#" <span id="verified">The recording verifies: complete and unchanged.</span>"#
                .to_string()
        }
        Some(Err(e)) => format!(
            r#" <strong id="verified" class="status denied">The recording does not verify: {}</strong>"#,
            escape(&e)
        ),
    };
    format!(
        r#"<p>{}{check}</p><pre id="replay">{}</pre>"#,
        if running {
            "The session is running: this page follows it."
        } else {
            "The session has ended."
        },
        escape(text)
    )
}

pub(crate) fn session_list(sessions: &[portcullis_record::Summary], stored: &[String]) -> String {
    let mut out = String::from(r#"<ul class="requests" id="sessions">"#);
    if sessions.is_empty() && stored.is_empty() {
        out.push_str(r#"<li class="empty">No recorded session.</li>"#);
    }
    for s in sessions.iter().rev() {
        let _ = write!(
            out,
            r#"<li><a class="request" data-id="{id}" href="/sessions/{id}"><strong>{id}</strong> <code>{who}</code> on <code>{target}</code> · {n} statements, {denied} refused · {outcome}</a></li>"#,
            id = escape(&s.id),
            who = escape(&s.principal),
            target = escape(&s.target),
            n = s.statements,
            denied = s.denied,
            outcome = escape(s.outcome.as_deref().unwrap_or("running")),
        );
    }
    for id in stored.iter().rev() {
        let _ = write!(
            out,
            r#"<li><a class="request" data-id="{id}" href="/sessions/{id}"><strong>{id}</strong> · in object storage</a></li>"#,
            id = escape(id),
        );
    }
    out.push_str("</ul>");
    out
}

/// The live list of an inbox or history; `id` is the element's id.
pub(crate) fn request_list(id: &str, requests: &[&Request], empty: &str) -> String {
    let mut out = format!(r#"<ul class="requests" id="{id}">"#);
    if requests.is_empty() {
        let _ = write!(out, r#"<li class="empty">{}</li>"#, escape(empty));
    }
    for request in requests {
        let summary = request.summary();
        // One line: a line break shows as ⏎, so that blank lines cannot
        // push the rest of a statement out of the preview.
        let one_line = summary
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join(" ⏎ ");
        let short: String = one_line.chars().take(160).collect();
        let _ = write!(
            out,
            r#"<li><a class="request" data-id="{id}" href="/requests/{id}"><strong>#{id}</strong> <span class="status {status}">{status}</span> {kind} by <strong>{who}</strong> on <code>{target}</code> · reviewers {groups}<br><code>{summary}{more}</code></a></li>"#,
            id = request.id,
            status = request.status.as_str(),
            kind = request.kind(),
            who = escape(&request.requester.id),
            target = escape(&request.target),
            groups = escape(&model::groups_list(&request.approval.groups)),
            summary = escape(&short),
            more = if short.len() < one_line.len() {
                "…"
            } else {
                ""
            },
        );
    }
    out.push_str("</ul>");
    out
}

/// A request's status and reviews: the live part of its page.
pub(crate) fn request_status(request: &Request) -> String {
    let mut out = format!(
        r#"<div class="card"><p>Status: <span id="status" class="status {s}" data-status="{s}">{s}</span>"#,
        s = request.status.as_str()
    );
    if let Some(outcome) = &request.outcome {
        let _ = write!(out, " — {}", escape(outcome));
    }
    if let Some(until) = request.grant_until {
        let _ = write!(
            out,
            "<br>Grant until {} (Unix time {until})",
            escape(&utc(until))
        );
    }
    out.push_str("</p>");
    if request.reviews.is_empty() {
        out.push_str("<p>No review yet.</p>");
    } else {
        out.push_str("<ul>");
        for review in &request.reviews {
            let _ = write!(
                out,
                "<li><strong>{}</strong> {} at {}: {}</li>",
                escape(&review.reviewer),
                if review.approve { "approved" } else { "denied" },
                escape(&utc(review.at)),
                escape(&review.comment)
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("</div>");
    out
}

pub(crate) fn request_page(
    request: &Request,
    status: &str,
    may_review: Result<(), String>,
    csrf: &str,
    error: Option<&str>,
) -> String {
    let mut out = String::new();
    if let Some(error) = error {
        let _ = write!(
            out,
            r#"<div class="card error" id="error">{}</div>"#,
            escape(error)
        );
    }
    if asks_with_unshown(request) {
        out.push_str(r#"<div class="card error" id="unshown">This request holds characters that are not drawn as themselves (a change of direction, an invisible or a control character). Each is shown as <code>[U+…]</code> where it is: read the text as the database or the shell will, not as it may look elsewhere.</div>"#);
    }
    out.push_str(r#"<div class="card"><dl>"#);
    let mut row = |name: &str, value: String| {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", escape(name), value);
    };
    let requester = &request.requester;
    row(
        "Requester",
        format!(
            "{} <small>(subject {}, issuer {}, groups {})</small>",
            escape(&requester.id),
            escape(&requester.subject),
            escape(&requester.issuer),
            escape(&requester.groups.join(", "))
        ),
    );
    row(
        "Target",
        format!("<code>{}</code>", escape(&request.target)),
    );
    row(
        "Reason given",
        request
            .reason
            .as_deref()
            .map(escape)
            .unwrap_or_else(|| "<em>none</em>".into()),
    );
    row(
        "Reviewers",
        format!(
            "a member of {} ({} approval{} in all)",
            escape(&model::groups_list(&request.approval.groups)),
            request.approval.min_approvals,
            if request.approval.min_approvals == 1 {
                ""
            } else {
                "s"
            }
        ),
    );
    row("Asked", escape(&utc(request.created_at)));
    row("Expires", escape(&utc(request.expires_at)));
    match &request.subject {
        Subject::Statement {
            session,
            client_addr,
            text,
            prepared,
            batch,
            parameters,
            policies,
            policy_reason,
            policy_version,
        } => {
            row(
                "Session",
                format!("{} from {}", escape(session), escape(client_addr)),
            );
            let names: Vec<String> = policies
                .iter()
                .map(|p| format!("<code>{}</code>", escape(p)))
                .collect();
            row(
                "Held by",
                format!(
                    "{}: {} <small>(policy version {})</small>",
                    names.join(", "),
                    escape(policy_reason),
                    escape(policy_version)
                ),
            );
            row(
                "Statement",
                format!(
                    r#"<pre id="statement">{}</pre>{}"#,
                    escape(&folded(text)),
                    line_count(text)
                ),
            );
            if let Some(prepared) = prepared {
                row(
                    "Which runs",
                    format!(r#"<pre id="prepared">{}</pre>"#, escape(&folded(prepared))),
                );
            }
            if let Some(batch) = batch {
                row(
                    "Sent in one query",
                    format!(
                        r#"<pre id="batch">{}</pre><small>all of it runs once this statement is approved</small>"#,
                        escape(&folded(batch))
                    ),
                );
            }
            if !parameters.is_empty() {
                let shown: Vec<String> = parameters
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        format!(
                            "${} = {}",
                            i + 1,
                            p.as_deref()
                                .map(portcullis_core::text::sql_literal)
                                .unwrap_or_else(|| "NULL".into())
                        )
                    })
                    .collect();
                row(
                    "Parameters",
                    format!("<pre>{}</pre>", escape(&shown.join("\n"))),
                );
            }
        }
        Subject::Access { seconds } => {
            row("Access for", escape(&model::duration(*seconds)));
        }
    }
    out.push_str("</dl></div>");
    out.push_str(&live(status));
    match may_review {
        Ok(()) => {
            let _ = write!(
                out,
                r#"<form class="card" id="decision-form" method="post" action="/requests/{id}">
<input type="hidden" name="csrf" value="{csrf}">
<label for="comment">Comment (required)</label>
<textarea id="comment" name="comment" required></textarea>
<p><button name="decision" value="approve">Approve</button><button name="decision" value="deny">Deny</button></p>
</form>"#,
                id = request.id,
                csrf = escape(csrf),
            );
        }
        Err(why) if request.status == Status::Pending => {
            let _ = write!(
                out,
                r#"<p class="card" id="cannot-review">{}</p>"#,
                escape(&why)
            );
        }
        Err(_) => {}
    }
    out
}

/// `2026-11-30 14:05:09 UTC`.
fn utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_of_blank_lines_are_folded_and_counted() {
        let text = format!(
            "add column note text{}, drop column total",
            "\n".repeat(400)
        );
        assert_eq!(
            super::folded(&text),
            "add column note text\n[399 blank lines]\n, drop column total"
        );
        assert_eq!(super::folded("a\n\nb\n"), "a\n\nb\n");
        assert_eq!(super::folded("a\n \n\t\nb"), "a\n[2 blank lines]\nb");
        // A no-break space is a name to PostgreSQL: its lines stay.
        assert_eq!(
            super::folded("a\n\u{a0}\n\u{a0}\nb"),
            "a\n\u{a0}\n\u{a0}\nb"
        );
    }

    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<a href="x">'&"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }

    fn held(text: &str, parameters: Vec<Option<String>>) -> Request {
        serde_json::from_value(serde_json::json!({
            "id": 7, "status": "pending", "target": "demo",
            "requester": {"id": "alice@example.com", "subject": "alice", "issuer": "test", "groups": ["eng"]},
            "kind": "statement", "session": "s1", "client_addr": "127.0.0.1:1",
            "text": text, "parameters": parameters,
            "policies": ["no-unbounded-writes"], "policy_reason": "why", "policy_version": "v1",
            "approval": {"groups": ["dba"], "min_approvals": 1},
            "created_at": 0, "expires_at": 60,
        }))
        .unwrap()
    }

    #[test]
    fn a_reviewer_sees_direction_changes_and_invisible_characters_named() {
        // Drawn by a browser, this reads `delete from t where id = 1 --`.
        let page = request_page(
            &held("delete from t \u{202E}-- 1 = di erehw", Vec::new()),
            "pending",
            Ok(()),
            "csrf",
            None,
        );
        assert!(
            page.contains("delete from t [U+202E]-- 1 = di erehw"),
            "{page}"
        );
        assert!(!page.contains('\u{202E}'), "{page}");
        assert!(page.contains(r#"id="unshown""#), "{page}");
        let plain = request_page(
            &held("delete from t", Vec::new()),
            "pending",
            Ok(()),
            "c",
            None,
        );
        assert!(!plain.contains(r#"id="unshown""#), "{plain}");
        assert_eq!(escape("a\u{200B}b\rc\td\ne"), "a[U+200B]b[U+000D]c\td\ne");
    }

    #[test]
    fn users_text_is_drawn_in_stored_order_and_cannot_widen_the_page() {
        // The browser draws; what the page asks of it is checked here.
        for rule in [
            "main pre, main code, main dd, a.request { unicode-bidi: bidi-override; direction: ltr; }",
            "grid-template-columns: 10rem minmax(0, 1fr)",
            "dd { margin: 0; min-width: 0; overflow-wrap: anywhere; }",
            "a.request code { white-space: pre-wrap;",
        ] {
            assert!(STYLE.contains(rule), "{rule}");
        }
    }

    #[test]
    fn one_parameter_cannot_pass_for_several() {
        let page = request_page(
            &held(
                "update t set v = $1, id = $2::int",
                vec![
                    Some("archived', $2 = '7".into()),
                    Some("7'\n\n-- (no more parameters)\n'".into()),
                    None,
                ],
            ),
            "pending",
            Ok(()),
            "csrf",
            None,
        );
        assert!(
            page.contains("$1 = &#39;archived&#39;&#39;, $2 = &#39;&#39;7&#39;\n$2 = E&#39;7\\&#39;\\n\\n-- (no more parameters)\\n\\&#39;&#39;\n$3 = NULL"),
            "{page}"
        );
    }

    #[test]
    fn formats_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_083_200), "2026-12-01 00:00:00 UTC");
    }
}
