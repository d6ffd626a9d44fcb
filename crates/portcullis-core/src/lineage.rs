//! Where the values of a statement's result come from, as far as the
//! statement's text shows: what the masking needs to know about output
//! columns that PostgreSQL's RowDescription does not tie to a table column
//! (an expression, a column of a subquery, a `COPY`).
//!
//! The names here are as the parser gives them: unquoted, with the case the
//! grammar folds to. Nothing here is resolved against a catalog.

/// A relation named in a statement (a table, view or materialized view; the
/// catalog says which).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelationRef {
    pub schema: Option<String>,
    pub name: String,
    /// The alias it is given in this statement (`customers c`).
    pub alias: Option<String>,
}

/// A column reference as written: `email`, `c.email`, `public.customers.email`,
/// or a whole row (`c`, `c.*`, `customers`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ColumnRefName {
    /// The qualifiers before the column: empty, `[alias]`, `[table]` or
    /// `[schema, table]`.
    pub qualifiers: Vec<String>,
    /// The column name; `None` for `x.*` (a whole row).
    pub column: Option<String>,
}

impl std::fmt::Display for ColumnRefName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for qualifier in &self.qualifiers {
            write!(f, "{qualifier}.")?;
        }
        f.write_str(self.column.as_deref().unwrap_or("*"))
    }
}

/// One output column of a statement's result.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutputColumn {
    /// Every column reference anywhere in the column's expression, including
    /// inside subqueries (`(select email from customers limit 1)`).
    pub refs: Vec<ColumnRefName>,
    /// True when the value cannot carry any source value: a constant, a
    /// `count(...)`, a parameter. When true, `refs` may still list what the
    /// expression names.
    pub harmless: bool,
    /// True when the value may come from somewhere the text does not show: a
    /// call of a function that is not a known built-in (it can read any
    /// table), a subquery whose own output cannot be followed.
    pub opaque: bool,
}

/// How a `COPY ... TO` writes its rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CopyFormat {
    Text,
    Csv,
    Binary,
}

/// What a `COPY ... TO STDOUT` copies.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CopyOut {
    pub format: CopyFormat,
    /// The `DELIMITER` option's byte (default tab for text, comma for CSV).
    pub delimiter: u8,
    /// The `HEADER` option (CSV): the first line holds column names.
    pub header: bool,
    /// The source.
    pub source: CopySource,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CopySource {
    /// `COPY relation [(columns)] TO ...`; `columns` empty means all of them,
    /// in the table's order.
    Relation {
        relation: RelationRef,
        columns: Vec<String>,
    },
    /// `COPY (query) TO ...`: the query's lineage.
    Query(Box<Lineage>),
}

/// The lineage of one statement's result.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Lineage {
    /// One entry per output column, in order, when the statement's output
    /// list can be matched to result columns position by position: `None`
    /// when it has a `*` (its width is only known from the catalog), or the
    /// statement returns no rows the text can describe.
    pub columns: Option<Vec<OutputColumn>>,
    /// Every relation named anywhere in the statement (subqueries, CTE
    /// bodies, set operations), without CTE names; sorted, no duplicates.
    pub relations: Vec<RelationRef>,
    /// True when names in the output list may not be the names of the
    /// relations' columns: a subquery or function in FROM, a CTE, a set
    /// operation (UNION, ...), a VALUES list. Name-based tracking is then
    /// not to be trusted.
    pub renames: bool,
    /// True when the statement returns rows whose origin its text does not
    /// show at all: `FETCH` from a cursor, `CALL` with output parameters, a
    /// statement that runs another (`EXECUTE` is resolved by the session,
    /// not here).
    pub opaque: bool,
    /// For `COPY ... TO STDOUT`.
    pub copy: Option<CopyOut>,
    /// For INSERT, UPDATE and MERGE: where the values they store come from,
    /// as one column (every reference in every written value). A value
    /// copied from a masked column into another must not be stored where
    /// it would be read back in clear.
    pub written: Option<OutputColumn>,
    /// The column references that decide which rows come back, and how
    /// many, rather than what they hold: everything outside the statement's
    /// output list (WHERE, JOIN, GROUP BY, HAVING, ORDER BY, LIMIT, FROM
    /// items, the output of subqueries in FROM and of CTEs, the arguments of
    /// set-returning functions, aggregates' FILTER and windows). A masked
    /// column used there would tell its values through the rows:
    /// `where g = ascii(substr(email, i, 1))` over `generate_series`.
    /// Sorted, no duplicates; a bare `IS [NOT] NULL` test is not listed.
    pub conditions: Vec<ColumnRefName>,
    /// The column references an output computes over rather than returns
    /// as they are: every reference in an output expression that is not a
    /// bare column (`upper(email)`, `email::int`, `1 / (ascii(email) -
    /// 48)`), but for those under a form that cannot carry a value
    /// (`count(email)`, `email is null`, `exists (...)`). A computation
    /// can fail by the value it reads, and whether and where it fails tells
    /// the value. Sorted, no duplicates.
    pub computed: Vec<ColumnRefName>,
    /// True when a value is cast to a type that names a catalog object by
    /// its oid (`regclass`, `regtype`, `regproc`, ...): reading or printing
    /// one looks the catalog up by that value.
    pub catalog_types: bool,
    /// True for an EXPLAIN that counts the buffers or memory its planning
    /// used: what the catalog lookups of planning found cached.
    pub counts_planning: bool,
    /// Operators the statement applies by name, as written (`###`,
    /// `public.###` for `OPERATOR(public.###)`), and those its keywords
    /// stand for (`=` for `IN`, `CASE x WHEN` and joins by `USING`, `~~`
    /// for `LIKE`, `<`, `<=`, `>`, `>=` for `BETWEEN`): an operator users
    /// made runs their function. Sorted, no duplicates.
    pub operators: Vec<String>,
    /// Types the statement makes values of (casts, typed literals, column
    /// definition lists), as written (`att_d`, `public.att_d`,
    /// `pg_catalog.int4` for `int`): making a value of a domain runs its
    /// checks. Sorted, no duplicates.
    pub types: Vec<String>,
    /// The types a protocol Parse gives the statement's parameters that
    /// are not built in (OID 16384 and above): a value bound to one is made
    /// of it, which its text does not show. Set by the session.
    pub parameter_types: Vec<u32>,
}
