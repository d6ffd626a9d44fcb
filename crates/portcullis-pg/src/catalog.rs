//! What masking needs to know of a target's catalog: each relation's schema,
//! name, kind and columns by attribute number, the definition of each view
//! (to follow its columns to the tables they read), and which user-defined
//! types are text.
//!
//! A RowDescription names a column's table by OID and the column by number;
//! mask rules name them by schema, table and column. The catalog is read with
//! the gateway's own credentials on a connection of its own (kept between
//! reads, which are then one round trip), once per target
//! and again when it is older than [`MAX_AGE`] or misses a relation a result
//! names (a table created since), at most once per [`MIN_REFRESH`].
//!
//! Reading a view's definition takes a lock on the view and on what it
//! reads, which anyone who may lock those could hold for as long as they
//! like, stalling every masked session that needs the catalog. So
//! definitions are read apart from the rest, skipping views that someone
//! holds or awaits an exclusive lock on, under a short `lock_timeout` for
//! the race in between. A view whose
//! definition was not read proves nothing (its columns are masked as a
//! whole), and the snapshot is read again soon.

use crate::error::PgError;
use crate::server::{PgTarget, Rows, TargetConnection};
use portcullis_sql::name_parts;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// A snapshot older than this is read again before it is used.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Missing relations trigger a new read at most this often.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// A snapshot that lacks some view's definition is read again after this.
const INCOMPLETE_MAX_AGE: Duration = Duration::from_secs(5);
/// How long a read on the kept connection may take before it is given up
/// for a read on a new one (the target may have gone without a word).
const KEPT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the catalog read waits for a lock before it reads without.
const LOCK_TIMEOUT: &str = "1s";

#[derive(Clone, Debug)]
pub struct Column {
    pub name: String,
    /// `pg_type.typname`: `text`, `varchar`, `int8`, `jsonb`, ...
    pub type_name: String,
}

#[derive(Clone, Debug)]
pub struct Relation {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    /// `pg_class.relkind`: `r` table, `p` partitioned table, `v` view, `m`
    /// materialized view, `f` foreign table.
    pub kind: u8,
    /// By attribute number (index 0 is attnum 1); `None` for dropped columns.
    pub columns: Vec<Option<Column>>,
    /// For a view or materialized view, its definition (`pg_get_viewdef`).
    pub definition: Option<String>,
}

impl Relation {
    pub fn column(&self, attnum: i16) -> Option<&Column> {
        let idx = usize::try_from(attnum).ok()?.checked_sub(1)?;
        self.columns.get(idx)?.as_ref()
    }

    /// Views and materialized views: their values come from other relations.
    pub fn is_view(&self) -> bool {
        matches!(self.kind, b'v' | b'm')
    }
}

/// Users' code that runs unseen: making a value of a type (a domain's
/// check, a cast), or planning a read of a relation (its indexes', checks'
/// and partition key's functions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Code {
    /// SQL, followed as a statement is: a domain's check as `SELECT
    /// (condition)`, a `LANGUAGE sql` function's body.
    Sql(String),
    /// A user's function that counts as a call: its name.
    Function(String),
}

/// One reading of the catalog.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub relations: HashMap<u32, Relation>,
    /// Relation name to the OIDs of every relation of that name, any schema.
    by_name: HashMap<String, Vec<u32>>,
    /// User-defined types whose text form is a string (domains over text,
    /// `citext`, enums).
    pub text_types: HashSet<u32>,
    /// Names of functions made by users (not by PostgreSQL or an
    /// extension): one may overload a built-in the classifier trusts
    /// (`public.upper(int)` returning anything), so a call by that name
    /// cannot be followed.
    pub user_functions: HashSet<String>,
    /// The relations a read of which reads a foreign table (see
    /// [`Snapshot::reads_foreign`]).
    pub foreign_reads: HashSet<u32>,
    /// Of those names, the ones every function of which is a plain SQL
    /// function (see `USER_FUNCTIONS_SQL`): their bodies, which a call
    /// runs as they read. An extension's SQL wrappers whose owner is no
    /// superuser (`citext`'s `replace`, on a managed service) are so what
    /// they do, not users' code of unknown effect.
    pub sql_bodies: HashMap<String, Vec<String>>,
    /// Symbols of operators made by users on a built-in type: `### id`
    /// runs the user's function behind `###`, which no function name in
    /// the statement shows.
    pub user_operators: HashSet<String>,
    /// Every operator users made (on any type), by name: the functions
    /// they run.
    pub operators: HashMap<String, Vec<String>>,
    /// Types whose values run users' code as they are made, by name: a
    /// domain's checks (also of a domain, range, array or composite type
    /// built on it), a cast through a user's function.
    pub type_code: HashMap<String, Vec<Code>>,
    /// The same, by type OID.
    pub type_code_by_oid: HashMap<u32, Vec<Code>>,
    /// Types a user's function casts from, by name (and their arrays'):
    /// a column of one may be cast with no cast in the text. The
    /// functions.
    pub cast_from: HashMap<String, Vec<String>>,
    /// The name of every operator and every type: a statement applying
    /// or making one of another name has it from a change made since the
    /// catalog was read (by a function, which the gateway does not see).
    pub(crate) known_operators: HashSet<String>,
    known_types: HashSet<String>,
    /// The OIDs of every type that is not built in.
    known_type_oids: HashSet<u32>,
    /// What planning a read of a relation runs, by relation OID: the
    /// functions that are not volatile (PostgreSQL folds them while it
    /// plans) in its indexes' expressions and predicates, its CHECK
    /// constraints, its partition key and its extended statistics, and in
    /// those of the relations that inherit from it.
    pub relation_code: HashMap<u32, Vec<Code>>,
    /// The row security policies' conditions of tables that have row
    /// security on, by relation OID, each as `SELECT (condition)`: a read
    /// runs them.
    pub policies: HashMap<u32, Vec<String>>,
    loaded_at: Option<Instant>,
    /// Some view's definition could not be read: it was locked.
    incomplete: bool,
    /// [`Catalog::generation`] when the read started.
    generation: u64,
}

impl Snapshot {
    /// Relations a name in a statement can mean: the one in `schema` when the
    /// name is qualified, every relation of that name otherwise (the session's
    /// `search_path` is not known, so each candidate counts).
    pub fn named<'a>(&'a self, schema: Option<&'a str>, name: &str) -> Vec<&'a Relation> {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|oid| self.relations.get(oid))
            .filter(|rel| schema.is_none_or(|s| s == rel.schema))
            .collect()
    }

    /// Whether reading `relation` reads a foreign table: it is one, or one
    /// is a partition or an inheritance child of it. Its rows come from a
    /// query on the table's server (this database, maybe), which the
    /// gateway cannot follow.
    pub fn reads_foreign(&self, relation: &Relation) -> bool {
        relation.kind == b'f' || self.foreign_reads.contains(&relation.oid)
    }

    /// Whether any of `functions` (names as a statement writes them) may
    /// be a user's function rather than the built-in of that name.
    pub fn shadows(&self, functions: &[String]) -> bool {
        functions.iter().any(|f| {
            name_parts(f)
                .last()
                .is_some_and(|name| self.is_user_function(name))
        })
    }

    /// Adds a relation, as a reading of the catalog would (for tests and
    /// benchmarks).
    pub fn add_relation(&mut self, relation: Relation) {
        self.by_name
            .entry(relation.name.clone())
            .or_default()
            .push(relation.oid);
        self.relations.insert(relation.oid, relation);
    }

    /// Whether a statement applies an operator or makes a value of a type
    /// that this reading of the catalog does not know.
    pub fn lacks_names(&self, lineage: &portcullis_core::Lineage) -> bool {
        let unknown = |names: &[String], known: &HashSet<String>| {
            names.iter().any(|name| match name_parts(name).as_slice() {
                [schema, _] if schema == "pg_catalog" => false,
                [.., name] => !known.contains(name),
                [] => false,
            })
        };
        unknown(&lineage.operators, &self.known_operators)
            || unknown(&lineage.types, &self.known_types)
            || lineage
                .parameter_types
                .iter()
                .any(|oid| !self.known_type_oids.contains(oid))
    }

    /// Whether users made a function named `name` (unqualified).
    pub fn is_user_function(&self, name: &str) -> bool {
        self.user_functions.contains(name)
    }

    /// Whether a statement calling `functions` may run a user's function
    /// where its text shows a built-in: a function of that name, or any
    /// operator a user made on a built-in type (an operator is reached by
    /// keywords too: `LIKE` is `~~`, `BETWEEN` is `>=` and `<=`).
    pub fn runs_user_code(&self, functions: &[String]) -> bool {
        self.shadows(functions) || !self.user_operators.is_empty()
    }

    /// Whether users made functions on the target: code the gateway cannot
    /// see (a domain's check, a trigger, a function folded while a
    /// statement is planned) may raise errors that quote covered values.
    pub fn has_user_code(&self) -> bool {
        !self.user_functions.is_empty() || !self.user_operators.is_empty()
    }

    fn is_fresh(&self) -> bool {
        let max_age = if self.incomplete {
            INCOMPLETE_MAX_AGE
        } else {
            MAX_AGE
        };
        self.loaded_at.is_some_and(|at| at.elapsed() < max_age)
    }

    fn refreshed_recently(&self) -> bool {
        self.loaded_at.is_some_and(|at| at.elapsed() < MIN_REFRESH)
    }
}

/// The catalog of one target, shared by its sessions.
#[derive(Default)]
pub struct Catalog {
    snapshot: RwLock<Arc<Snapshot>>,
    /// One reader at a time; the others wait for its result.
    /// Held by the reader, with the connection it reads on, kept between
    /// reads: a read is then one round trip, not a login.
    loading: tokio::sync::Mutex<Option<TargetConnection>>,
    /// Counts the DDL seen run through the gateway: a snapshot read before
    /// the last of them is read again before it is used.
    generation: AtomicU64,
    /// Sessions that sent a statement that may change relations or views
    /// and have not been seen outside a transaction since: what they change
    /// may be committed before the gateway sees it (a pipeline without
    /// Sync, a client that leaves), so meanwhile, and for [`SETTLE`] after,
    /// no snapshot older than [`MIN_REFRESH`] is used.
    changing: AtomicUsize,
    settle_until: std::sync::Mutex<Option<Instant>>,
    /// A statement that may have made code (a function, an operator, a
    /// domain's check, a trigger...) ran since the last read.
    code_made: AtomicBool,
}

/// Whether a statement's command may make code that other statements run
/// without naming it: functions and procedures, operators, domains (their
/// checks), triggers, rules, casts, aggregates, types, languages,
/// extensions, row security policies, and anything not classified.
pub fn makes_code(command: &str) -> bool {
    [
        "FUNCTION",
        "PROCEDURE",
        "OPERATOR",
        "DOMAIN",
        "TRIGGER",
        "RULE",
        "CAST",
        "AGGREGATE",
        "TYPE",
        "LANGUAGE",
        "EXTENSION",
        "POLICY",
        "TRANSFORM",
        "CONVERSION",
        "ROUTINE",
    ]
    .iter()
    .any(|word| command.contains(word))
}

/// How long after a change is seen to end snapshots stay short-lived: the
/// target may still be committing it.
const SETTLE: Duration = Duration::from_secs(2);

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog").finish_non_exhaustive()
    }
}

/// Whether a statement names a relation the snapshot does not hold (and
/// that is not a system one): the catalog is then read again.
pub fn lacks_relations(snapshot: &Snapshot, relations: &[portcullis_core::RelationRef]) -> bool {
    relations.iter().any(|r| {
        !is_system_name(r.schema.as_deref(), &r.name)
            && snapshot.named(r.schema.as_deref(), &r.name).is_empty()
    })
}

/// Whether a relation name that the catalog does not hold is a system one,
/// which the catalog leaves out on purpose and never needs reading again for.
pub fn is_system_name(schema: Option<&str>, name: &str) -> bool {
    matches!(schema, Some("pg_catalog" | "information_schema"))
        || (schema.is_none() && name.starts_with("pg_"))
}

impl Catalog {
    fn current(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The last snapshot read, however old, unless DDL has run since it
    /// was read (empty before the first read).
    pub fn cached(&self) -> Option<Arc<Snapshot>> {
        let current = self.current();
        (current.generation == self.generation.load(Ordering::Acquire) && !self.unsettled())
            .then_some(current)
    }

    /// A statement that may change relations or views ran (or its
    /// transaction ended): what was read before it is read again.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// A statement that may make code users run (see [`makes_code`]) was
    /// sent: until the catalog is read again, any may exist.
    pub fn code_may_be_made(&self) {
        self.code_made.store(true, Ordering::Release);
    }

    /// Whether users' code (functions, operators) may run on the target
    /// where no statement shows it: as the last read found, or made since.
    pub fn has_user_code(&self) -> bool {
        self.code_made.load(Ordering::Acquire) || self.current().has_user_code()
    }

    /// A session sent a statement that may change relations or views.
    pub fn change_begins(&self) {
        self.changing.fetch_add(1, Ordering::AcqRel);
        self.invalidate();
    }

    /// A session that may have made code (a call: a function may run DDL)
    /// was seen outside a transaction: for [`SETTLE`], no snapshot older
    /// than [`MIN_REFRESH`] is used. Unlike DDL, which has the catalog read
    /// again at once, a call leaves a snapshot read in the second before it
    /// in use: calls are many, and a read after each would stall every
    /// session.
    pub fn code_may_have_changed(&self) {
        if let Ok(mut until) = self.settle_until.lock() {
            *until = Some(Instant::now() + SETTLE);
        }
    }

    /// That session was seen outside a transaction, or ended.
    pub fn change_ends(&self) {
        self.changing.fetch_sub(1, Ordering::AcqRel);
        if let Ok(mut until) = self.settle_until.lock() {
            *until = Some(Instant::now() + SETTLE);
        }
        self.invalidate();
    }

    /// Whether a change may be committed that the gateway has not seen.
    fn unsettled(&self) -> bool {
        self.changing.load(Ordering::Acquire) > 0
            || self
                .settle_until
                .lock()
                .ok()
                .and_then(|until| *until)
                .is_some_and(|until| Instant::now() < until)
    }

    /// A snapshot that is fresh, read after the last DDL the gateway saw
    /// and, unless it was read again less than [`MIN_REFRESH`] ago, holds
    /// every relation `missing` says it lacks.
    pub async fn snapshot(
        &self,
        target: &PgTarget,
        missing: impl Fn(&Snapshot) -> bool,
    ) -> Result<Arc<Snapshot>, PgError> {
        let usable = |current: &Snapshot| {
            current.is_fresh()
                && current.generation == self.generation.load(Ordering::Acquire)
                && (!self.unsettled() || current.refreshed_recently())
                && (!missing(current) || current.refreshed_recently())
        };
        let current = self.current();
        if usable(&current) {
            return Ok(current);
        }
        let mut kept = self.loading.lock().await;
        // Another session may have read it while this one waited.
        let current = self.current();
        if usable(&current) {
            return Ok(current);
        }
        let generation = self.generation.load(Ordering::Acquire);
        // Code made from here on is not in this read: the flag stays.
        let code_made = self.code_made.swap(false, Ordering::AcqRel);
        let mut loaded = match load(target, &mut kept).await {
            Ok(loaded) => loaded,
            Err(e) => {
                if code_made {
                    self.code_made.store(true, Ordering::Release);
                }
                return Err(e);
            }
        };
        loaded.generation = generation;
        let loaded = Arc::new(loaded);
        match self.snapshot.write() {
            Ok(mut guard) => *guard = loaded.clone(),
            Err(poisoned) => *poisoned.into_inner() = loaded.clone(),
        }
        Ok(loaded)
    }
}

/// Logs in for catalog reads and reads on the new connection.
async fn fresh_read(
    target: &PgTarget,
    kept: &mut Option<TargetConnection>,
) -> Result<Vec<Result<Rows, PgError>>, PgError> {
    let mut params = crate::PINNED_PARAMETERS.to_vec();
    params.push(("lock_timeout", LOCK_TIMEOUT));
    // Only the system's names: an operator or function a user put in
    // `public` must not answer the gateway's own queries.
    params.push(("search_path", "pg_catalog"));
    // Compiling these small queries to machine code (their nested
    // conditions make them look costly) took 90 of their 105 ms.
    params.push(("jit", "off"));
    let mut connection = target.connect(&params).await?;
    let answers = connection.query_many(target, &QUERIES).await?;
    *kept = Some(connection);
    Ok(answers)
}

/// Reads only the catalog's own tables: it takes no lock a user can block.
const RELATIONS_SQL: &str =
    "SELECT c.oid, n.nspname, c.relname, c.relkind, a.attnum, a.attname, t.typname \
     FROM pg_catalog.pg_class c \
     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 \
     LEFT JOIN pg_catalog.pg_type t ON t.oid = a.atttypid AND NOT a.attisdropped \
     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
     AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' \
     ORDER BY c.oid, a.attnum";

/// `pg_get_viewdef` locks the view and every relation its query names:
/// views where any of those has an exclusive lock held or awaited on it (a
/// waiting request blocks later ones too) have no definition read.
const VIEWS_SQL: &str =
    "WITH locked AS (SELECT l.relation FROM pg_catalog.pg_locks l \
       WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' \
       AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database())), \
     views AS (SELECT c.oid, c.oid IN (SELECT relation FROM locked) OR EXISTS ( \
         SELECT 1 FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_depend d \
         ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = r.oid \
         AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass \
         WHERE r.ev_class = c.oid AND d.refobjid IN (SELECT relation FROM locked)) AS locked \
       FROM pg_catalog.pg_class c \
       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
       WHERE c.relkind IN ('v', 'm') \
       AND n.nspname NOT IN ('pg_catalog', 'information_schema')) \
     SELECT v.oid, CASE WHEN NOT v.locked THEN pg_catalog.pg_get_viewdef(v.oid) END \
     FROM views v";

/// Whether function `$proc` (an OID) is in C or `internal`, and not
/// volatile. An extension's SQL or PL/pgSQL resolves the names it does not
/// qualify on the caller's `search_path`, which a role's default may put a
/// user's schema first in: only its compiled code is what it installed,
/// whatever runs it; and only what its author declared changes nothing is
/// trusted behind an operator, a cast or a built-in's name.
macro_rules! in_c {
    ($proc:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_proc lp \
               JOIN pg_catalog.pg_language ll ON ll.oid = lp.prolang \
               WHERE lp.oid = ",
            $proc,
            " AND ll.lanname IN ('c', 'internal') AND lp.provolatile <> 'v')"
        )
    };
}

/// Whether an object (of catalog `$catalog`, OID `$oid`, owned by
/// `$owner`, running function `$proc`) is an extension's: a member of one,
/// owned by a superuser, whose code is compiled (see `in_c!`). An
/// extension a user may create (a trusted one) is theirs to add their own
/// functions to, which stay theirs.
macro_rules! installed {
    ($catalog:literal, $oid:literal, $owner:literal, $proc:literal) => {
        concat!(
            "(EXISTS (SELECT 1 FROM pg_catalog.pg_depend e \
               WHERE e.classid = 'pg_catalog.",
            $catalog,
            "'::pg_catalog.regclass AND e.objid = ",
            $oid,
            " AND e.deptype = 'e') \
             AND ",
            $owner,
            " IN (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolsuper) AND ",
            in_c!($proc),
            ")"
        )
    };
}

/// Whether an object (of catalog `$catalog`, OID `$oid`, owned by `$owner`
/// when it has an owner) is an administrator's: a member of an extension,
/// and neither the extension's owner nor its own is a role the gateway's
/// login role (`SESSION_USER` of the catalog connection: a role default
/// may set another `CURRENT_USER`) can act as, and nothing is when that
/// role can create roles (`CREATEROLE` may grant itself any role, act as
/// it, and take the grant back). On a managed service an
/// administrator who is no superuser owns the extensions; no session
/// through the gateway can have added to them or changed what is in them.
/// An extension the gateway's role created (a trusted one) is its own to
/// add to.
macro_rules! administered {
    ($catalog:literal, $oid:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_depend ad \
               JOIN pg_catalog.pg_extension ax ON ax.oid = ad.refobjid \
               WHERE ad.classid = 'pg_catalog.",
            $catalog,
            "'::pg_catalog.regclass AND ad.objid = ",
            $oid,
            " AND ad.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass \
               AND ad.deptype = 'e' \
               AND NOT pg_catalog.pg_has_role(SESSION_USER, ax.extowner, 'MEMBER') \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles cr \
                 WHERE (cr.rolcreaterole OR cr.rolsuper) \
                 AND pg_catalog.pg_has_role(SESSION_USER, cr.oid, 'MEMBER')))"
        )
    };
    ($catalog:literal, $oid:literal, $owner:literal) => {
        concat!(
            "(",
            administered!($catalog, $oid),
            " AND NOT pg_catalog.pg_has_role(SESSION_USER, ",
            $owner,
            ", 'MEMBER'))"
        )
    };
}

/// Whether function `$proc` (an OID) is an administrator's compiled code
/// (see `administered!`): a plain function (not an aggregate, which runs
/// functions of its choosing), not built in, in C or `internal` (languages
/// only a superuser may create functions in), not volatile (declared by
/// whoever wrote it to change nothing). So an extension's operators and
/// casts on a managed service are what they were installed as; a user's
/// operator over an extension's function is not trusted for it (see
/// `USER_OPERATORS_SQL`), nor one over a built-in (`nextval`). This holds
/// while the gateway's role has never been able to act as the
/// administrator: one that had `CREATEROLE` and gave it up may have added
/// to the administrator's extensions then (the README says so). Functions
/// under a built-in's name, and functions a plan folds, are not trusted
/// this way at all.
macro_rules! compiled {
    ($proc:literal) => {
        concat!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_proc cp WHERE cp.oid = ",
            $proc,
            " AND cp.oid >= 16384 AND cp.prokind = 'f' AND ",
            in_c!("cp.oid"),
            " AND ",
            administered!("pg_proc", "cp.oid", "cp.proowner"),
            ")"
        )
    };
}

/// Casts through functions that are not built in, and neither an
/// extension's nor an administrator's cast through compiled code, other
/// than a range's to its multirange (made with the range): `(castsource,
/// casttarget, castfunc)`.
macro_rules! user_casts {
    () => {
        concat!(
            "(SELECT k.castsource, k.casttarget, k.castfunc::pg_catalog.regproc::pg_catalog.text \
               FROM pg_catalog.pg_cast k JOIN pg_catalog.pg_proc f ON f.oid = k.castfunc \
               WHERE k.castfunc >= 16384 \
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_range g \
                 WHERE g.rngtypid = k.castsource AND g.rngmultitypid = k.casttarget) \
               AND NOT ",
            installed!("pg_proc", "f.oid", "f.proowner", "f.oid"),
            " AND NOT (",
            administered!("pg_cast", "k.oid"),
            " AND ",
            compiled!("f.oid"),
            ")) AS casts(castsource, casttarget, castfunc)"
        )
    };
}

/// Functions outside the system schemas that are not an extension's
/// compiled code (see `installed!`): the name, and the body of a plain `LANGUAGE sql` function
/// with a body in text, no default arguments (expressions a call runs
/// too), no `SET` clause (its settings apply as the body is parsed:
/// `standard_conforming_strings = off` splits it into other statements
/// than the gateway reads), and a signature (its result, its arguments,
/// `OUT` and `TABLE` columns included, and the elements of any array among
/// them) that holds no type a user can make (a domain, an enum, a
/// composite type, a range or multirange) nor one a user's cast starts or
/// ends at (code that runs as values are made into, or out of, the type).
const USER_FUNCTIONS_SQL: &str = concat!(
    "SELECT DISTINCT p.proname, CASE WHEN p.prokind = 'f' AND p.prosrc <> '' \
       AND p.pronargdefaults = 0 AND p.proconfig IS NULL \
       AND p.prolang IN (SELECT l.oid FROM pg_catalog.pg_language l WHERE l.lanname = 'sql') \
       AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(pg_catalog.array_append( \
           COALESCE(p.proallargtypes, p.proargtypes::pg_catalog.oid[]), p.prorettype)) AS sig(oid) \
         JOIN pg_catalog.pg_type st ON st.oid = sig.oid \
           OR st.oid = (SELECT e.typelem FROM pg_catalog.pg_type e WHERE e.oid = sig.oid) \
         WHERE st.typtype IN ('d', 'c', 'e', 'r', 'm') \
         OR EXISTS (SELECT 1 FROM ",
    user_casts!(),
    " WHERE casts.castsource = st.oid OR casts.casttarget = st.oid)) \
       THEN p.prosrc END \
     FROM (SELECT p.* FROM pg_catalog.pg_proc p \
       JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
       WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') OFFSET 0) AS p \
     WHERE NOT ",
    // An extension's SQL or PL/pgSQL is followed (or counted) as a user's.
    // An administrator's compiled code is not trusted under a built-in's
    // name: whoever could once act as the administrator (a role that had
    // CREATEROLE and gave it up) may have renamed one (`md5`, `count`).
    installed!("pg_proc", "p.oid", "p.proowner", "p.oid")
);

/// Operators outside the system schemas (picked first: `OFFSET 0` keeps the
/// planner from testing the hundreds of built-in ones for the rest) that
/// no extension installed, other
/// than an administrator's (see `administered!`) whose function, and its
/// negator's and commutator's (the planner may run those instead), are
/// compiled code (see `compiled!`): the name, the
/// function it runs, and whether a built-in type is on either side (one on
/// users' types cannot take a covered column without a cast of the users'
/// own).
const USER_OPERATORS_SQL: &str = concat!(
    "SELECT o.oprname, o.oprcode::pg_catalog.text, \
     (o.oprleft BETWEEN 1 AND 16383 OR o.oprright BETWEEN 1 AND 16383)::pg_catalog.text \
     FROM (SELECT o.* FROM pg_catalog.pg_operator o \
       JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace \
       WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') OFFSET 0) AS o \
     WHERE NOT ",
    installed!(
        "pg_operator",
        "o.oid",
        "o.oprowner",
        "o.oprcode::pg_catalog.oid"
    ),
    " AND NOT (",
    administered!("pg_operator", "o.oid", "o.oprowner"),
    " AND ",
    compiled!("o.oprcode::pg_catalog.oid"),
    // The planner may run an operator's negator (`NOT (a op b)` is
    // `a negator b`) or commutator instead: each must be compiled too.
    " AND NOT EXISTS (WITH RECURSIVE linked(oid) AS ( \
         SELECT o.oid UNION SELECT v.oid FROM linked l \
         JOIN pg_catalog.pg_operator lo ON lo.oid = l.oid \
         CROSS JOIN LATERAL (VALUES (lo.oprnegate), (lo.oprcom)) AS v(oid) \
         WHERE v.oid <> 0) \
       SELECT 1 FROM linked l JOIN pg_catalog.pg_operator lo ON lo.oid = l.oid \
       WHERE NOT (",
    administered!("pg_operator", "lo.oid", "lo.oprowner"),
    " AND ",
    compiled!("lo.oprcode::pg_catalog.oid"),
    ")))"
);

/// For each type whose values run code as they are made, that code: the
/// checks of domains, the functions of users' casts to or from a type that
/// is not built in (`5::theirs`, `row(1)::theirs::int`), and what a type
/// built on such a type inherits from it (a domain over it, its array, a
/// range over it, a composite type with a field of it).
const TYPE_CODE_SQL: &str = concat!(
    // `built_on`: each type and a type made of it (one join per step of
    // the recursion, not a scan of every type with a subquery per pair).
    "WITH RECURSIVE built_on(part, whole) AS ( \
       SELECT t.typbasetype, t.oid FROM pg_catalog.pg_type t WHERE t.typbasetype <> 0 \
       UNION ALL SELECT t.typelem, t.oid FROM pg_catalog.pg_type t WHERE t.typelem <> 0 \
       UNION ALL SELECT r.rngsubtype, r.rngtypid FROM pg_catalog.pg_range r \
       UNION ALL SELECT r.rngsubtype, r.rngmultitypid FROM pg_catalog.pg_range r \
       UNION ALL SELECT a.atttypid, t.oid FROM pg_catalog.pg_type t \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid \
         WHERE t.typrelid <> 0 AND a.attnum > 0 AND NOT a.attisdropped), \
     code(oid, kind, body) AS ( \
       SELECT c.contypid, 'check', pg_catalog.pg_get_constraintdef(c.oid) \
         FROM pg_catalog.pg_constraint c WHERE c.contypid <> 0 AND c.contype = 'c' \
       UNION SELECT side.oid, 'cast', casts.castfunc FROM ",
    user_casts!(),
    " CROSS JOIN LATERAL (VALUES (casts.castsource), (casts.casttarget)) AS side(oid) \
         WHERE side.oid >= 16384 \
       UNION SELECT b.whole, code.kind, code.body FROM code JOIN built_on b ON b.part = code.oid) \
     SELECT DISTINCT t.oid, t.typname, code.kind, code.body FROM code JOIN pg_catalog.pg_type t ON t.oid = code.oid \
     JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace \
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
);

/// The types users' casts start from that are not built in, and the
/// domains and arrays over them (a cast from a domain's base type applies
/// to the domain): the names, and the functions.
const CAST_FROM_SQL: &str = concat!(
    "WITH RECURSIVE source(oid, castfunc) AS ( \
       SELECT casts.castsource, casts.castfunc FROM ",
    user_casts!(),
    " WHERE casts.castsource >= 16384 \
       UNION SELECT t.oid, source.castfunc FROM source JOIN pg_catalog.pg_type t \
         ON t.typbasetype = source.oid OR t.typelem = source.oid) \
     SELECT DISTINCT t.typname, source.castfunc FROM source JOIN pg_catalog.pg_type t ON t.oid = source.oid"
);

/// For each relation, the functions a plan of a read of it folds (named in
/// its expressions, or behind an operator there): see
/// [`Snapshot::relation_code`]. With each, whether it is followed as SQL
/// (`LANGUAGE sql` with a body given as text, no `SET` clause, and no type
/// of users' in its signature, whose checks a call runs), and that text.
const RELATION_CODE_SQL: &str = concat!(
    "WITH RECURSIVE uses(relid, refclassid, refobjid) AS ( \
       SELECT i.indrelid, d.refclassid, d.refobjid FROM pg_catalog.pg_depend d \
         JOIN pg_catalog.pg_index i ON d.objid = i.indexrelid \
         WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
       UNION SELECT d.objid, d.refclassid, d.refobjid FROM pg_catalog.pg_depend d \
         WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
       UNION SELECT c.conrelid, d.refclassid, d.refobjid FROM pg_catalog.pg_depend d \
         JOIN pg_catalog.pg_constraint c ON d.objid = c.oid \
         WHERE d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND c.conrelid OPERATOR(pg_catalog.<>) 0 \
       UNION SELECT s.stxrelid, d.refclassid, d.refobjid FROM pg_catalog.pg_depend d \
         JOIN pg_catalog.pg_statistic_ext s ON d.objid = s.oid \
         WHERE d.classid = 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass), \
     direct(relid, proid) AS ( \
       SELECT relid, refobjid FROM uses WHERE refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass \
       UNION SELECT u.relid, o.oprcode FROM uses u JOIN pg_catalog.pg_operator o ON o.oid = u.refobjid \
         WHERE u.refclassid = 'pg_catalog.pg_operator'::pg_catalog.regclass), \
     up(relid, proid) AS ( \
       SELECT relid, proid FROM direct \
       UNION SELECT h.inhparent, up.proid FROM up JOIN pg_catalog.pg_inherits h ON h.inhrelid = up.relid) \
     SELECT DISTINCT up.relid, p.oid::pg_catalog.regproc::pg_catalog.text, \
       (l.lanname = 'sql' AND p.prosrc <> '' AND p.proconfig IS NULL AND p.prorettype < 16384 \
        AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(p.proargtypes::pg_catalog.oid[]) AS a(t) WHERE a.t >= 16384) \
       )::pg_catalog.text, p.prosrc \
     FROM up JOIN pg_catalog.pg_proc p ON p.oid = up.proid \
     JOIN pg_catalog.pg_language l ON l.oid = p.prolang \
     WHERE p.oid >= 16384 AND p.provolatile <> 'v' AND NOT ",
    // Not an administrator's either: one the gateway's role could once
    // act as may have made a writing function immutable for an index.
    installed!("pg_proc", "p.oid", "p.proowner", "p.oid")
);

const OPERATOR_NAMES_SQL: &str = "SELECT DISTINCT oprname FROM pg_catalog.pg_operator";
const TYPE_NAMES_SQL: &str = "SELECT oid, typname FROM pg_catalog.pg_type";

/// The conditions of the row security policies of tables with row
/// security on.
const POLICIES_SQL: &str = "SELECT p.polrelid, pg_catalog.pg_get_expr(p.polqual, p.polrelid) \
     FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid \
     WHERE c.relrowsecurity AND p.polqual IS NOT NULL";

const TEXT_TYPES_SQL: &str = "SELECT t.oid FROM pg_catalog.pg_type t \
     WHERE t.oid >= 16384 AND t.typcategory IN ('S', 'E')";

/// The catalog's queries, sent together.
/// The relations a read of which reads a foreign table: foreign tables,
/// and every table they are a partition or an inheritance child of.
const FOREIGN_READS_SQL: &str = "WITH RECURSIVE up(relid) AS ( \
       SELECT c.oid FROM pg_catalog.pg_class c WHERE c.relkind = 'f' \
       UNION SELECT h.inhparent FROM up JOIN pg_catalog.pg_inherits h ON h.inhrelid = up.relid) \
     SELECT relid FROM up";

const QUERIES: [&str; 12] = [
    RELATIONS_SQL,
    TEXT_TYPES_SQL,
    USER_FUNCTIONS_SQL,
    USER_OPERATORS_SQL,
    TYPE_CODE_SQL,
    CAST_FROM_SQL,
    POLICIES_SQL,
    OPERATOR_NAMES_SQL,
    TYPE_NAMES_SQL,
    RELATION_CODE_SQL,
    FOREIGN_READS_SQL,
    // Last: it may wait for a lock, and give up.
    VIEWS_SQL,
];

/// Reads the catalog on the connection `kept` from the last read, or on a
/// new one (also when the kept one has failed: the target may have ended
/// an idle session), and keeps it.
async fn load(target: &PgTarget, kept: &mut Option<TargetConnection>) -> Result<Snapshot, PgError> {
    let answers = match kept.take() {
        Some(mut connection) => {
            let read = connection.query_many(target, &QUERIES);
            match tokio::time::timeout(KEPT_READ_TIMEOUT, read).await {
                Ok(Ok(answers)) => {
                    *kept = Some(connection);
                    answers
                }
                // Dropped: a connection that failed, or stalled, is not
                // asked again.
                _ => fresh_read(target, kept).await?,
            }
        }
        None => fresh_read(target, kept).await?,
    };
    let mut answers = answers.into_iter();
    let mut next = || {
        answers
            .next()
            .unwrap_or_else(|| Err(target.protocol("no answer to a catalog query")))
    };
    let (rows, types, functions, operators) = (next()?, next()?, next()?, next()?);
    let (type_code, cast_from, policies) = (next()?, next()?, next()?);
    let (operator_names, type_names, relation_code) = (next()?, next()?, next()?);
    let foreign_reads = next()?;
    // Locked since the check: no definitions this time.
    let views = next().ok();
    let bad_row = || PgError::TargetProtocol {
        target: target.target.name.clone(),
        message: "unexpected catalog row".into(),
    };
    let mut snapshot = Snapshot {
        loaded_at: Some(Instant::now()),
        ..Snapshot::default()
    };
    for row in rows {
        let [Some(oid), Some(schema), Some(name), Some(kind), Some(attnum), Some(attname), type_name] =
            <[Option<String>; 7]>::try_from(row).map_err(|_| bad_row())?
        else {
            return Err(bad_row());
        };
        let oid: u32 = oid.parse().map_err(|_| bad_row())?;
        let attnum: usize = attnum.parse().map_err(|_| bad_row())?;
        let relation = snapshot.relations.entry(oid).or_insert_with(|| Relation {
            oid,
            schema,
            name,
            kind: kind.bytes().next().unwrap_or(b'r'),
            columns: Vec::new(),
            definition: None,
        });
        if relation.columns.len() < attnum {
            relation.columns.resize(attnum, None);
        }
        let slot = attnum
            .checked_sub(1)
            .and_then(|idx| relation.columns.get_mut(idx));
        if let (Some(slot), Some(type_name)) = (slot, type_name) {
            *slot = Some(Column {
                name: attname,
                type_name,
            });
        }
    }
    snapshot.incomplete = views.is_none();
    for row in views.unwrap_or_default() {
        let [Some(oid), definition] =
            <[Option<String>; 2]>::try_from(row).map_err(|_| bad_row())?
        else {
            return Err(bad_row());
        };
        let oid: u32 = oid.parse().map_err(|_| bad_row())?;
        match (snapshot.relations.get_mut(&oid), definition) {
            (Some(relation), Some(definition)) => relation.definition = Some(definition),
            // Created since the relations were read, or locked.
            _ => snapshot.incomplete = true,
        }
    }
    for relation in snapshot.relations.values() {
        snapshot
            .by_name
            .entry(relation.name.clone())
            .or_default()
            .push(relation.oid);
    }
    let first_column = |rows: Vec<Vec<Option<String>>>| -> HashSet<String> {
        rows.into_iter()
            .filter_map(|row| row.into_iter().next().flatten())
            .collect()
    };
    // Name to the bodies of its functions, `None` once one has none.
    let mut bodies: HashMap<String, Option<Vec<String>>> = HashMap::new();
    for row in functions {
        let mut row = row.into_iter();
        let name = row.next().flatten().ok_or_else(bad_row)?;
        let entry = bodies.entry(name).or_insert_with(|| Some(Vec::new()));
        match (entry.as_mut(), row.next().flatten()) {
            (Some(list), Some(body)) => list.push(body),
            _ => *entry = None,
        }
    }
    snapshot.user_functions = bodies.keys().cloned().collect();
    snapshot.sql_bodies = bodies
        .into_iter()
        .filter_map(|(name, bodies)| Some((name, bodies?)))
        .collect();
    snapshot.known_operators = first_column(operator_names);
    for row in type_names {
        let [oid, name] = non_null(row).ok_or_else(bad_row)?;
        let oid: u32 = oid.parse().map_err(|_| bad_row())?;
        if oid >= 16384 {
            snapshot.known_type_oids.insert(oid);
        }
        snapshot.known_types.insert(name);
    }
    for row in operators {
        let [name, function, builtin_side] = non_null(row).ok_or_else(bad_row)?;
        if builtin_side == "true" {
            snapshot.user_operators.insert(name.clone());
        }
        snapshot.operators.entry(name).or_default().push(function);
    }
    for row in type_code {
        let [oid, name, kind, body] = non_null(row).ok_or_else(bad_row)?;
        let oid: u32 = oid.parse().map_err(|_| bad_row())?;
        let code = match kind.as_str() {
            "check" => Code::Sql(check_query(&body)),
            _ => Code::Function(body),
        };
        snapshot
            .type_code_by_oid
            .entry(oid)
            .or_default()
            .push(code.clone());
        snapshot.type_code.entry(name).or_default().push(code);
    }
    for row in relation_code {
        let [oid, function, sql, body] = non_null(row).ok_or_else(bad_row)?;
        let oid: u32 = oid.parse().map_err(|_| bad_row())?;
        let code = if sql == "true" {
            Code::Sql(body)
        } else {
            Code::Function(function)
        };
        snapshot.relation_code.entry(oid).or_default().push(code);
    }
    for row in cast_from {
        let [name, function] = non_null(row).ok_or_else(bad_row)?;
        snapshot.cast_from.entry(name).or_default().push(function);
    }
    for row in policies {
        let [oid, condition] = non_null(row).ok_or_else(bad_row)?;
        let oid: u32 = oid.parse().map_err(|_| bad_row())?;
        snapshot
            .policies
            .entry(oid)
            .or_default()
            .push(format!("SELECT ({condition})"));
    }
    for row in foreign_reads {
        let [oid] = non_null(row).ok_or_else(bad_row)?;
        snapshot
            .foreign_reads
            .insert(oid.parse().map_err(|_| bad_row())?);
    }
    snapshot.text_types = types
        .into_iter()
        .filter_map(|row| row.into_iter().next().flatten()?.parse().ok())
        .collect();
    Ok(snapshot)
}

/// The values of a row none of which may be NULL, `N` of them.
fn non_null<const N: usize>(row: Vec<Option<String>>) -> Option<[String; N]> {
    row.into_iter()
        .collect::<Option<Vec<String>>>()?
        .try_into()
        .ok()
}

/// A domain's `CHECK (condition) [NOT VALID]` (`pg_get_constraintdef`) as
/// `SELECT (condition)`; `VALUE` reads as a column.
fn check_query(definition: &str) -> String {
    let condition = definition
        .strip_prefix("CHECK ")
        .unwrap_or(definition)
        .trim_end_matches(" NOT VALID");
    format!("SELECT {condition}")
}
