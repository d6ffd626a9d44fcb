//! What one SQL statement does, as the policy sees it.

use std::fmt;

/// The effect of a statement, classified by what it really does rather than
/// by its first keyword: a data-modifying CTE is a write, `EXPLAIN ANALYZE` of
/// a `DELETE` is a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    /// Creates, alters or drops schema objects (tables, databases, ...).
    Ddl,
    /// Changes privileges or identities: GRANT, REVOKE, roles, `SET ROLE`,
    /// `SET SESSION AUTHORIZATION`; and acts on other sessions
    /// (`pg_cancel_backend`, `pg_terminate_backend`), which all reach the
    /// target as one role.
    Dcl,
    Copy,
    /// Runs code whose effect cannot be seen from the statement: `CALL`, or
    /// a `SELECT` of a function not known to be read-only.
    Call,
    Set,
    Transaction,
    /// VACUUM, ANALYZE, CHECKPOINT, LISTEN, NOTIFY, DISCARD, ...
    Utility,
    /// Anything else, including `DO` blocks: nothing can be proven about it.
    Other,
}

impl StatementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Select => "select",
            StatementKind::Insert => "insert",
            StatementKind::Update => "update",
            StatementKind::Delete => "delete",
            StatementKind::Merge => "merge",
            StatementKind::Ddl => "ddl",
            StatementKind::Dcl => "dcl",
            StatementKind::Copy => "copy",
            StatementKind::Call => "call",
            StatementKind::Set => "set",
            StatementKind::Transaction => "transaction",
            StatementKind::Utility => "utility",
            StatementKind::Other => "other",
        }
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One classified SQL statement.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StatementInfo {
    /// The strongest effect of the statement (a CTE that deletes makes the
    /// whole statement a `Delete`).
    pub kind: StatementKind,
    /// Every effect found anywhere in the statement, `kind` included, sorted.
    pub kinds: Vec<StatementKind>,
    /// The PostgreSQL command, upper case: `SELECT`, `DROP DATABASE`,
    /// `ALTER SYSTEM`, `CREATE ROLE`, `COPY FROM PROGRAM`, `DO`, ...
    pub command: String,
    /// Relations the statement touches, as written (`schema.table` when
    /// qualified), sorted and without duplicates.
    pub tables: Vec<String>,
    /// Functions the statement calls, as written, sorted and without duplicates.
    pub functions: Vec<String>,
    /// False when any UPDATE or DELETE in the statement has no WHERE clause;
    /// true otherwise (including statements with no UPDATE or DELETE).
    pub has_where: bool,
    /// Whether the statement can change data or state on the target.
    pub writes: bool,
    /// The statement's own text, without the statements around it.
    pub text: String,
    /// For `PREPARE name AS ...`, the name; `kind` and the other fields then
    /// describe the prepared statement.
    pub prepares: Option<String>,
    /// For `EXECUTE name`, the name: the caller resolves it to what was
    /// prepared under that name.
    pub executes: Option<String>,
    /// For an `EXECUTE` resolved to what it runs: the text of the prepared
    /// statement, as it was when this `EXECUTE` was read.
    pub prepared_text: Option<String>,
    /// Settings the statement changes, lower case, sorted: the name of a SET
    /// or RESET (`client_encoding` for `SET NAMES`), the first argument of
    /// `set_config`; `*` for RESET ALL or a `set_config` whose setting is
    /// computed.
    pub settings: Vec<String>,
    /// What the statement does to the session's prepared statements and
    /// cursors, so that the gateway knows what a later `EXECUTE` or a
    /// protocol Execute of a cursor runs.
    pub objects: SessionObjects,
    /// Where the values of the statement's result come from, for masking;
    /// the default (no columns, no relations) for statements that return no
    /// rows.
    pub lineage: std::sync::Arc<crate::Lineage>,
    /// The statement with its constants replaced by parameters (PostgreSQL's
    /// own normalization), set only when nothing above depends on those
    /// constants: statements of one shape are classified alike, and decided
    /// alike by policies that do not read `text`.
    pub shape: Option<std::sync::Arc<str>>,
}

/// Named things a statement makes or ends in the session. `*` stands for
/// all of them (`DEALLOCATE ALL`, `CLOSE ALL`, `DISCARD ALL`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SessionObjects {
    /// `DECLARE name CURSOR FOR ...`: the cursor (a portal) it opens.
    pub declares: Option<String>,
    /// `DEALLOCATE name`: the prepared statement it removes.
    pub deallocates: Option<String>,
    /// `CLOSE name`: the cursor it closes.
    pub closes: Option<String>,
    /// `FETCH ... name`, `MOVE ... name`: the portal it runs further, which
    /// may be one bound through the protocol from any statement.
    pub fetches: Option<String>,
}
