//! What the gateway knows of a session's prepared statements and portals,
//! to say what an `EXECUTE` or a protocol Execute runs.
//!
//! The client side records each definition (Parse, Bind, SQL `PREPARE`,
//! `DECLARE`) and each removal (Close, `DEALLOCATE`, `CLOSE`, `DISCARD ALL`)
//! as it sends it, as a pending [`Change`]. A name means what its newest
//! pending change says, or else what the target confirmed. The target side
//! confirms a change when the target does (ParseComplete, BindComplete,
//! CloseComplete, the statement's CommandComplete) and drops it when the
//! target skips or refuses it; so a refused definition never hides one made
//! after it, and the map never holds a statement the target does not have.
//! Portals end with their transaction: a ReadyForQuery saying the session is
//! idle clears the confirmed ones.

use portcullis_core::StatementInfo;
use std::collections::HashMap;

/// What a Bind or a `DECLARE` made a portal.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The statement it runs; `None` for one the gateway did not see
    /// prepared.
    pub statement: Option<StatementInfo>,
    /// The parameters it was bound with, shown to reviewers and recorded;
    /// `None` when they cannot all be shown. Kept with the portal, so that a
    /// Bind the target refuses leaves the values of the one before.
    pub parameters: Option<Vec<Option<String>>>,
    /// Declared with SQL `DECLARE`: it may outlive its transaction (`WITH
    /// HOLD`).
    pub declared: bool,
}

/// One pending change, named by the number it was recorded under.
#[derive(Debug)]
pub struct Change(u64);

#[derive(Debug)]
enum Op {
    /// Defines (`Some`) or removes (`None`) a prepared statement.
    Statement(String, Option<StatementInfo>),
    /// Binds (`Some`) or closes (`None`) a portal.
    Portal(String, Option<Bound>),
    AllStatements,
    AllPortals,
}

/// What a portal runs, as [`Prepared::portal`] says.
#[derive(Debug, PartialEq)]
pub enum Portal<'a> {
    /// Bound from, or declared as, this statement, with these parameters
    /// (`None`: they cannot all be shown).
    Bound(&'a StatementInfo, Option<&'a [Option<String>]>),
    /// Bound from a statement the gateway did not see prepared.
    Unchecked,
    /// A close of it is on its way: whether the target will close it is not
    /// known yet (it skips what follows an error), so what it runs is not
    /// either.
    Closing,
    /// Changed by a message the target may yet refuse, with a Sync between
    /// (see [`Prepared::fence`]): it runs the new statement or the old one.
    Unsure,
    /// Not seen bound or declared: a cursor opened inside a function, one
    /// declared `WITH HOLD` in an earlier transaction, or none at all.
    Unknown,
}

/// How many names of cursors that may have outlived their transaction are
/// kept; past that, any name may be one.
const MAX_OUTLIVED: usize = 1024;

#[derive(Default)]
pub struct Prepared {
    statements: HashMap<String, StatementInfo>,
    portals: HashMap<String, Bound>,
    /// Cursors declared in a transaction that ended: one declared `WITH
    /// HOLD` is still open on the target, under a name the gateway no
    /// longer says what it runs. A Bind of such a name fails there.
    outlived: std::collections::HashSet<String>,
    /// More such names than [`MAX_OUTLIVED`] were seen.
    outlived_overflow: bool,
    /// Oldest first; with whether a Sync (or the end of a Query) was sent
    /// after it.
    pending: Vec<(u64, Op, bool)>,
    next: u64,
}

impl Prepared {
    fn record(&mut self, op: Op) -> Change {
        self.next += 1;
        self.pending.push((self.next, op, false));
        Change(self.next)
    }

    /// What the statement `name` runs, as far as the gateway knows.
    pub fn statement(&self, name: &str) -> Option<&StatementInfo> {
        for (_, op, _) in self.pending.iter().rev() {
            match op {
                Op::Statement(n, value) if n == name => return value.as_ref(),
                Op::AllStatements => return None,
                _ => {}
            }
        }
        self.statements.get(name)
    }

    /// What the portal `name` runs, as far as the gateway knows.
    pub fn portal(&self, name: &str) -> Portal<'_> {
        fn bound(value: &Bound) -> Portal<'_> {
            match &value.statement {
                Some(statement) => Portal::Bound(statement, value.parameters.as_deref()),
                None => Portal::Unchecked,
            }
        }
        let unsure = || {
            self.unsure(
                |op| matches!(op, Op::Portal(n, _) if n == name) || matches!(op, Op::AllPortals),
                self.portals.contains_key(name) || self.may_have_outlived(name),
            )
        };
        for (_, op, _) in self.pending.iter().rev() {
            match op {
                Op::Portal(n, Some(_)) if n == name && unsure() => return Portal::Unsure,
                Op::Portal(n, Some(value)) if n == name => return bound(value),
                Op::Portal(n, None) if n == name => return Portal::Closing,
                Op::AllPortals => return Portal::Closing,
                _ => {}
            }
        }
        self.portals.get(name).map_or(Portal::Unknown, bound)
    }

    /// Whether a cursor by this name may still be open on the target from
    /// an earlier transaction.
    fn may_have_outlived(&self, name: &str) -> bool {
        self.outlived_overflow || self.outlived.contains(name)
    }

    /// Whether what the statement `name` runs waits on a change the target
    /// may yet refuse (see [`Prepared::fence`]).
    pub fn statement_unsure(&self, name: &str) -> bool {
        self.unsure(
            |op| matches!(op, Op::Statement(n, _) if n == name) || matches!(op, Op::AllStatements),
            self.statements.contains_key(name),
        )
    }

    /// A Sync, or the end of a Query, was sent: the target goes on after it
    /// whatever became of the changes before. Until it answers them, a name
    /// that one of them redefines, and that meant something before, means
    /// one of two things: a Parse of a name that exists fails, and a Bind
    /// after the Sync runs the old statement. (Before the Sync, a refused
    /// change makes the target skip what follows it.)
    pub fn fence(&mut self) {
        for (_, _, fenced) in &mut self.pending {
            *fenced = true;
        }
    }

    /// Whether the newest pending change that `concerns` a name is behind a
    /// fence while the name meant something else before: a change pending
    /// before it, or what the target `confirmed`.
    fn unsure(&self, concerns: impl Fn(&Op) -> bool, confirmed: bool) -> bool {
        let mut changes = self.pending.iter().rev().filter(|(_, op, _)| concerns(op));
        match changes.next() {
            Some((_, _, fenced)) => *fenced && (confirmed || changes.next().is_some()),
            None => false,
        }
    }

    /// Defines (`Some`) or removes (`None`) a prepared statement.
    pub fn set_statement(&mut self, name: &str, statement: Option<StatementInfo>) -> Change {
        self.record(Op::Statement(name.to_string(), statement))
    }

    /// Binds (`Some`) or closes (`None`) a portal.
    pub fn set_portal(&mut self, name: &str, bound: Option<Bound>) -> Change {
        self.record(Op::Portal(name.to_string(), bound))
    }

    /// How many portals are known and changes pending: what bounds the
    /// parameters kept.
    pub fn portals_kept(&self) -> usize {
        self.portals.len() + self.pending.len()
    }

    /// The changes a classified statement of a simple Query makes.
    pub fn apply(&mut self, statement: &StatementInfo) -> Vec<Change> {
        let mut changes = Vec::new();
        if let Some(name) = &statement.prepares {
            // What the name runs is the prepared statement, not the PREPARE:
            // a Bind and Execute of it through the protocol are decided as
            // that statement (preparing runs nothing, running it does).
            let runs = StatementInfo {
                prepares: None,
                ..statement.clone()
            };
            changes.push(self.set_statement(name, Some(runs)));
        }
        if let Some(name) = &statement.objects.declares {
            let declared = Bound {
                statement: Some(statement.clone()),
                parameters: Some(Vec::new()),
                declared: true,
            };
            changes.push(self.set_portal(name, Some(declared)));
        }
        if let Some(name) = &statement.objects.deallocates {
            changes.push(if name == "*" {
                self.record(Op::AllStatements)
            } else {
                self.set_statement(name, None)
            });
        }
        if let Some(name) = &statement.objects.closes {
            changes.push(if name == "*" {
                self.record(Op::AllPortals)
            } else {
                self.set_portal(name, None)
            });
        }
        changes
    }

    /// The target did what these changes say.
    pub fn confirm(&mut self, changes: impl IntoIterator<Item = Change>) {
        for Change(id) in changes {
            let Some(at) = self.pending.iter().position(|(n, _, _)| *n == id) else {
                continue;
            };
            let (_, op, _) = self.pending.remove(at);
            match op {
                Op::Statement(name, Some(statement)) => {
                    self.statements.insert(name, statement);
                }
                Op::Statement(name, None) => {
                    self.statements.remove(&name);
                }
                Op::Portal(name, Some(statement)) => {
                    self.outlived.remove(&name);
                    self.portals.insert(name, statement);
                }
                Op::Portal(name, None) => {
                    self.outlived.remove(&name);
                    self.portals.remove(&name);
                }
                Op::AllStatements => self.statements.clear(),
                Op::AllPortals => {
                    self.portals.clear();
                    self.outlived.clear();
                    self.outlived_overflow = false;
                }
            }
        }
    }

    /// The target refused or skipped these changes.
    pub fn undo(&mut self, changes: impl IntoIterator<Item = Change>) {
        for Change(id) in changes {
            let Some(at) = self.pending.iter().position(|(n, _, _)| *n == id) else {
                continue;
            };
            let (_, op, _) = self.pending.remove(at);
            // PostgreSQL drops the unnamed statement before it parses a new
            // one: after a failed Parse of it, there is none.
            if let Op::Statement(name, _) = op {
                if name.is_empty() {
                    self.statements.remove("");
                }
            }
        }
    }

    /// The transaction ended: its portals are gone, but for cursors
    /// declared `WITH HOLD`, whose names are kept as maybe still open.
    pub fn end_transaction(&mut self) {
        for (name, bound) in self.portals.drain() {
            if bound.declared {
                if self.outlived.len() < MAX_OUTLIVED {
                    self.outlived.insert(name);
                } else {
                    self.outlived_overflow = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn statement(text: &str) -> StatementInfo {
        portcullis_sql::Classifier::new(0).classify(text).unwrap()[0].clone()
    }

    fn bind(text: &str, parameters: &[&str]) -> Option<Bound> {
        Some(Bound {
            statement: Some(statement(text)),
            parameters: Some(parameters.iter().map(|p| Some(p.to_string())).collect()),
            declared: false,
        })
    }

    fn text(prepared: &Prepared, name: &str) -> Option<String> {
        prepared.statement(name).map(|s| s.text.clone())
    }

    #[test]
    fn a_refused_definition_leaves_the_one_before() {
        let mut prepared = Prepared::default();
        let first =
            prepared.set_statement("s", Some(statement("select national_id from customers")));
        prepared.confirm([first]);
        // `PREPARE s AS select 1` while `s` exists: the target refuses it.
        let refused = prepared.apply(&statement("prepare s as select 1"));
        assert_eq!(text(&prepared, "s").unwrap(), "prepare s as select 1");
        prepared.undo(refused);
        assert_eq!(
            text(&prepared, "s").unwrap(),
            "select national_id from customers"
        );
    }

    #[test]
    fn a_refused_change_never_hides_a_later_one() {
        let mut prepared = Prepared::default();
        let first = prepared.set_statement("s", Some(statement("select 'x' as a")));
        prepared.confirm([first]);
        // Sent together: a PREPARE the target refuses, then a DEALLOCATE
        // and a PREPARE it runs.
        let refused = prepared.apply(&statement("prepare s as select 1"));
        let deallocate = prepared.apply(&statement("deallocate s"));
        let redefined = prepared.apply(&statement("prepare s as select email from customers"));
        prepared.undo(refused);
        prepared.confirm(deallocate);
        assert_eq!(
            text(&prepared, "s").unwrap(),
            "prepare s as select email from customers"
        );
        prepared.confirm(redefined);
        assert_eq!(
            text(&prepared, "s").unwrap(),
            "prepare s as select email from customers"
        );
    }

    #[test]
    fn a_failed_unnamed_parse_leaves_no_unnamed_statement() {
        let mut prepared = Prepared::default();
        let first = prepared.set_statement("", Some(statement("select 1")));
        prepared.confirm([first]);
        let failed = prepared.set_statement("", Some(statement("select 2")));
        prepared.undo([failed]);
        assert!(prepared.statement("").is_none());
    }

    #[test]
    fn deallocate_all_and_discard_all_remove_everything_once_run() {
        let mut prepared = Prepared::default();
        let a = prepared.set_statement("a", Some(statement("select 1")));
        let c = prepared.set_portal(
            "c",
            Some(Bound {
                statement: None,
                parameters: None,
                declared: false,
            }),
        );
        prepared.confirm([a, c]);
        let discard = prepared.apply(&statement("discard all"));
        assert!(prepared.statement("a").is_none());
        assert_eq!(prepared.portal("c"), Portal::Closing);
        prepared.undo(discard);
        assert!(prepared.statement("a").is_some());
        assert_eq!(prepared.portal("c"), Portal::Unchecked);
        let discard = prepared.apply(&statement("discard all"));
        prepared.confirm(discard);
        assert!(prepared.statement("a").is_none());
        assert_eq!(prepared.portal("c"), Portal::Unknown);
    }

    #[test]
    fn declare_binds_the_cursor_to_its_query() {
        let mut prepared = Prepared::default();
        let declared = prepared.apply(&statement(
            "declare cur cursor for select email from customers",
        ));
        prepared.confirm(declared);
        let Portal::Bound(bound, Some([])) = prepared.portal("cur") else {
            panic!("not bound");
        };
        assert_eq!(bound.lineage.relations[0].name, "customers");
        let closed = prepared.apply(&statement("close cur"));
        prepared.confirm(closed);
        assert_eq!(prepared.portal("cur"), Portal::Unknown);
    }

    /// A Parse of a name that exists fails, and the target, past the Sync,
    /// runs what the name meant before: until the target answers, the name
    /// means either.
    #[test]
    fn a_redefinition_behind_a_sync_leaves_the_name_unsure() {
        let mut prepared = Prepared::default();
        let held = prepared.set_statement("s1", Some(statement("delete from t")));
        prepared.confirm([held]);
        let decoy = prepared.set_statement("s1", Some(statement("select 1")));
        assert!(!prepared.statement_unsure("s1"));
        prepared.fence();
        assert!(prepared.statement_unsure("s1"));
        prepared.undo([decoy]);
        assert!(!prepared.statement_unsure("s1"));
        // A name defined for the first time: should the Parse fail, a Bind
        // of it fails too.
        let fresh = prepared.set_statement("s2", Some(statement("select 1")));
        prepared.fence();
        assert!(!prepared.statement_unsure("s2"));
        prepared.confirm([fresh]);
        // A portal rebound behind a Sync.
        let bound = prepared.set_portal("p", bind("delete from t", &[]));
        prepared.confirm([bound]);
        prepared.set_portal("p", bind("select 1", &[]));
        prepared.fence();
        assert_eq!(prepared.portal("p"), Portal::Unsure);
    }

    /// A close on its way may yet be skipped by the target (after an error
    /// in the same Query), and a savepoint's rollback keeps the portal: what
    /// it runs is not known until the target says.
    #[test]
    fn a_portal_being_closed_runs_nothing_known() {
        let mut prepared = Prepared::default();
        let bound = prepared.set_portal("p", bind("delete from t", &[]));
        prepared.confirm([bound]);
        let closing = prepared.apply(&statement("close p"));
        assert_eq!(prepared.portal("p"), Portal::Closing);
        prepared.undo(closing);
        assert!(matches!(prepared.portal("p"), Portal::Bound(..)));
    }

    /// Found in attack: a Bind the target refused (a portal that exists,
    /// inside a transaction) left its values shown to the reviewer of the
    /// portal's statement, which ran with the values bound before.
    #[test]
    fn a_refused_bind_leaves_the_parameters_bound_before() {
        let mut prepared = Prepared::default();
        let first = prepared.set_portal("p1", bind("update t set x = $1", &["7"]));
        prepared.confirm([first]);
        let decoy = prepared.set_portal("p1", bind("update t set x = $1", &["4500"]));
        assert!(matches!(prepared.portal("p1"), Portal::Bound(_, Some([Some(v)])) if v == "4500"));
        prepared.undo([decoy]);
        assert!(matches!(prepared.portal("p1"), Portal::Bound(_, Some([Some(v)])) if v == "7"));
    }

    /// Found in attack: a cursor declared `WITH HOLD` outlived its
    /// transaction, unknown to the gateway; a Bind of its name, refused by
    /// the target, was taken for what the name runs behind a Sync.
    #[test]
    fn a_cursor_that_may_have_outlived_its_transaction_leaves_its_name_unsure() {
        let mut prepared = Prepared::default();
        let declared = prepared.apply(&statement(
            "declare c cursor with hold for select email from customers",
        ));
        prepared.confirm(declared);
        prepared.end_transaction();
        assert_eq!(prepared.portal("c"), Portal::Unknown);
        let refused = prepared.set_portal("c", bind("update t set x = $1", &["4500"]));
        prepared.fence();
        assert_eq!(prepared.portal("c"), Portal::Unsure);
        prepared.undo([refused]);
        // A name never declared stays what a Bind makes it.
        let bound = prepared.set_portal("d", bind("update t set x = $1", &["1"]));
        prepared.fence();
        assert!(matches!(prepared.portal("d"), Portal::Bound(..)));
        prepared.confirm([bound]);
        // Closed: nothing by that name is left.
        let closed = prepared.apply(&statement("close all"));
        prepared.confirm(closed);
        prepared.set_portal("c", bind("update t set x = $1", &["4500"]));
        prepared.fence();
        assert!(matches!(prepared.portal("c"), Portal::Bound(..)));
    }
}
