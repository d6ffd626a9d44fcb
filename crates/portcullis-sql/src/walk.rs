//! What a statement does anywhere in its tree: the data-modifying statements
//! hidden in CTEs and subqueries, the relations it touches and the functions
//! it calls.
//!
//! The walk visits every node of the generic tree (see `tree.rs`), so nothing
//! depends on a list of node types that could miss one. Only the node types
//! that carry an effect are named here.
//!
//! The same walk gathers the statement-wide part of the lineage (see
//! `lineage.rs`): the relations named, with their aliases, and whether
//! anything may rename columns. Doing it here keeps one pass over the tree
//! and one implementation of CTE scoping.

use std::collections::BTreeSet;

use pg_query::protobuf::{
    AExprKind, AlterTableType, CmdType, JsonExprOp, OnConflictAction, SetOperation, SubLinkType,
};
use portcullis_core::{RelationRef, StatementKind};

use crate::functions::normalise_name;
use crate::tree::{Struct, Value};

/// Effects and names found in one statement tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Facts {
    /// Effects found in the tree: `Select` for a SELECT that reads a FROM
    /// clause, `Insert`/`Update`/`Delete`/`Merge` for data-modifying
    /// statements (and the actions of `MERGE` and `ON CONFLICT DO UPDATE`),
    /// `Ddl` for `SELECT ... INTO`, `Dcl` for row-level-security and owner
    /// changes in `ALTER TABLE` and for a SET of `role` or
    /// `session_authorization` nested in another statement. Function effects
    /// are not included.
    pub kinds: BTreeSet<StatementKind>,
    /// False when any UPDATE or DELETE in the tree has no WHERE clause.
    pub has_where: bool,
    pub tables: BTreeSet<String>,
    /// Normalised function names (see `functions::normalise_name`).
    pub functions: BTreeSet<String>,
    /// The prepared statement an `EXECUTE` in the tree runs (`EXPLAIN
    /// EXECUTE`, `CREATE TABLE ... AS EXECUTE`).
    pub executes: Option<String>,
    /// Settings the statement sets or resets, lower case: the name of a SET
    /// or RESET (also nested, as in `ALTER ROLE ... SET`), the first argument
    /// of `set_config`; `*` for RESET ALL, a `set_config` whose setting is
    /// not a literal, or an UPDATE of `pg_settings`.
    pub settings: BTreeSet<String>,
    /// Every relation a range variable names, with its alias, CTE names
    /// excepted; the `relations` of the statement's lineage.
    pub relations: BTreeSet<RelationRef>,
    /// Whether anything in the tree may give a column another name than
    /// its relation's: a subquery, function, `VALUES`, `XMLTABLE` or
    /// `JSON_TABLE` in FROM, a CTE, a set operation, a join that merges or
    /// renames columns, or column aliases.
    pub renames: bool,
    /// Operators applied by name, and types values are made of: see
    /// [`portcullis_core::Lineage::operators`] and
    /// [`portcullis_core::Lineage::types`].
    pub operators: BTreeSet<String>,
    pub types: BTreeSet<String>,
    /// `SELECT ... FOR UPDATE` / `FOR SHARE` anywhere: it marks the rows
    /// it locks (PostgreSQL refuses it in a read-only transaction).
    pub locks_rows: bool,
}

impl Default for Facts {
    fn default() -> Self {
        Facts {
            kinds: BTreeSet::new(),
            has_where: true,
            tables: BTreeSet::new(),
            functions: BTreeSet::new(),
            executes: None,
            settings: BTreeSet::new(),
            relations: BTreeSet::new(),
            renames: false,
            operators: BTreeSet::new(),
            types: BTreeSet::new(),
            locks_rows: false,
        }
    }
}

/// Collects the facts of `tree`.
pub(crate) fn collect(tree: &Value) -> Facts {
    let mut function_items = Vec::new();
    functions_in_from(tree, &mut function_items);
    let mut walker = Walker {
        facts: Facts::default(),
        scope: Vec::new(),
        function_items,
    };
    walker.visit(tree, "");
    walker.facts
}

/// A function in FROM, by the name its row goes by (its alias, or its
/// function's name), with the names of its columns the text shows.
struct FunctionItem {
    name: String,
    columns: Vec<String>,
}

/// The columns of built-ins in FROM that return rows of several named
/// columns: `e.key` of `jsonb_each(...) e` is a column, not a call.
const FUNCTION_COLUMNS: &[(&str, &[&str])] = &[
    ("json_each", &["key", "value"]),
    ("json_each_text", &["key", "value"]),
    ("jsonb_each", &["key", "value"]),
    ("jsonb_each_text", &["key", "value"]),
    ("pg_options_to_table", &["option_name", "option_value"]),
];

/// The names of a column definition list (`f(...) as t(a int, b text)`).
fn column_definitions(list: &[Value], columns: &mut Vec<String>) {
    for definition in list {
        if let Value::Struct(definition) = definition {
            columns.push(definition.str("colname").to_owned());
        }
    }
}

/// Every function in a FROM clause (`RangeFunction`), anywhere in `value`.
fn functions_in_from(value: &Value, found: &mut Vec<FunctionItem>) {
    let node = match value {
        Value::List(items) => return items.iter().for_each(|item| functions_in_from(item, found)),
        Value::Struct(node) => node,
        _ => return,
    };
    if node.name == "RangeFunction" {
        let mut columns = Vec::new();
        let mut names = Vec::new();
        if matches!(node.get("ordinality"), Some(Value::Bool(true))) {
            columns.push("ordinality".to_owned());
        }
        column_definitions(node.list("coldeflist"), &mut columns);
        // `functions` holds, for each function of `ROWS FROM (...)`, the
        // call and its column definitions.
        for function in node.list("functions") {
            let parts = match function {
                Value::Struct(list) if list.name == "List" => list.list("items"),
                Value::List(parts) => parts.as_slice(),
                _ => continue,
            };
            for part in parts {
                match part {
                    Value::Struct(call) if call.name == "FuncCall" => {
                        let name = normalise_name(call.list("funcname").iter().map(|p| match p {
                            Value::Struct(s) if s.name == "String" => s.str("sval"),
                            _ => "?",
                        }));
                        let bare = name.rsplit('.').next().unwrap_or(&name).to_owned();
                        if let Some((_, known)) = FUNCTION_COLUMNS.iter().find(|(f, _)| *f == bare)
                        {
                            columns.extend(known.iter().map(|c| (*c).to_owned()));
                        }
                        names.push(bare);
                    }
                    Value::Struct(list) if list.name == "List" => {
                        column_definitions(list.list("items"), &mut columns)
                    }
                    Value::List(definitions) => column_definitions(definitions, &mut columns),
                    _ => {}
                }
            }
        }
        if let Some(Value::Struct(alias)) = node.get("alias") {
            names = vec![alias.str("aliasname").to_owned()];
            for column in alias.list("colnames") {
                if let Value::Struct(column) = column {
                    columns.push(column.str("sval").to_owned());
                }
            }
        }
        // A function returning one value names its column as its row.
        columns.extend(names.iter().cloned());
        found.extend(names.into_iter().map(|name| FunctionItem {
            name,
            columns: columns.clone(),
        }));
    }
    for (_, field) in &node.fields {
        functions_in_from(field, found);
    }
}

/// Fields whose range variables may name a CTE rather than a relation. A
/// range variable elsewhere (the target of INSERT, UPDATE, DELETE, MERGE,
/// `SELECT INTO`, COPY, DDL) always names a relation, even when a CTE of the
/// same name is in scope.
const CTE_REFERENCE_FIELDS: &[&str] = &[
    "from_clause",
    "larg",
    "rarg",
    "source_relation",
    "using_clause",
];

struct Walker<'tree> {
    facts: Facts,
    /// Names of the CTEs visible at the current node, innermost last.
    scope: Vec<&'tree str>,
    /// The functions in FROM clauses of the statement.
    function_items: Vec<FunctionItem>,
}

impl<'tree> Walker<'tree> {
    /// Visits `value`, reached through the struct field `field` (lists and
    /// collapsed `Node` wrappers keep the field of their parent).
    fn visit(&mut self, value: &'tree Value, field: &'static str) {
        match value {
            Value::List(items) => {
                for item in items {
                    self.visit(item, field);
                }
            }
            Value::Struct(node) => self.visit_struct(node, field),
            Value::Null | Value::Bool(_) | Value::Int(_) | Value::Other | Value::Str(_) => {}
        }
    }

    fn visit_struct(&mut self, node: &'tree Struct, field: &'static str) {
        self.record(node, field);
        match node.get("with_clause") {
            Some(Value::Struct(with)) => self.visit_with_scope(node, with),
            _ => self.visit_fields(node),
        }
    }

    fn visit_fields(&mut self, node: &'tree Struct) {
        for (field, value) in &node.fields {
            self.visit(value, field);
        }
    }

    /// Visits a statement with a WITH clause: each CTE sees the CTEs before
    /// it (all of them when `WITH RECURSIVE`), the rest of the statement sees
    /// them all.
    fn visit_with_scope(&mut self, node: &'tree Struct, with: &'tree Struct) {
        let outer_len = self.scope.len();
        let recursive = matches!(with.get("recursive"), Some(Value::Bool(true)));
        let ctes = with.list("ctes");
        let names: Vec<&'tree str> = ctes
            .iter()
            .filter_map(|cte| match cte {
                Value::Struct(cte) => Some(cte.str("ctename")),
                _ => None,
            })
            .collect();
        if recursive {
            self.scope.extend(names.iter().copied());
        }
        for (cte_idx, cte) in ctes.iter().enumerate() {
            if !recursive {
                self.scope.truncate(outer_len);
                self.scope.extend(names.iter().take(cte_idx).copied());
            }
            self.visit(cte, "ctes");
        }
        self.scope.truncate(outer_len);
        self.scope.extend(names.iter().copied());
        for (field, value) in &node.fields {
            if *field != "with_clause" {
                self.visit(value, field);
            }
        }
        self.scope.truncate(outer_len);
    }

    /// Records the effect or name carried by one node.
    fn record(&mut self, node: &'tree Struct, field: &'static str) {
        match node.name {
            "RangeVar" => self.record_range_var(node, field),
            "FuncCall" => {
                let parts = node.list("funcname").iter().map(|part| match part {
                    Value::Struct(string) if string.name == "String" => string.str("sval"),
                    // Never produced by the grammar; an unreadable name is
                    // not in any allowlist, so it counts as an unknown call.
                    _ => "?",
                });
                let name = normalise_name(parts);
                if name == "set_config" {
                    self.facts.settings.insert(literal_setting(node));
                }
                self.facts.functions.insert(name);
            }
            // A grant inside another statement (`create schema s grant
            // select on ... to ...`) grants all the same.
            "GrantStmt" | "GrantRoleStmt" | "AlterDefaultPrivilegesStmt" => {
                self.facts.kinds.insert(StatementKind::Dcl);
            }
            // `q.f`, where `q` is a function in FROM, is a column of its
            // row or, when it has no column `f`, the call `f(q)`: over a
            // function returning one value, any function of one argument
            // (found in attack: `select q.pg_terminate_backend from abs(1)
            // q`, `q.ts_stat` over a text). A name that is no column the
            // text shows counts as a call.
            "ColumnRef" => {
                if let [Value::Struct(item), Value::Struct(field)] = node.list("fields") {
                    if item.name == "String" && field.name == "String" {
                        let (item, field) = (item.str("sval"), field.str("sval"));
                        let calls = self.function_items.iter().any(|function| {
                            function.name == item
                                && !function.columns.iter().any(|column| column == field)
                        });
                        if calls {
                            self.facts.functions.insert(normalise_name([field]));
                        }
                    }
                }
            }
            // SQL/JSON syntax to this parser (PostgreSQL 16 and later) is a
            // plain call of a function of that name to an older target,
            // which may be a user's (found in attack: `json_serialize(...)`
            // ran a user's function on PostgreSQL 15 as a SELECT calling
            // nothing). They count as calls of those names.
            name @ ("JsonSerializeExpr"
            | "JsonParseExpr"
            | "JsonScalarExpr"
            | "JsonFuncExpr"
            | "JsonObjectConstructor"
            | "JsonArrayConstructor"
            | "JsonArrayQueryConstructor"
            | "JsonObjectAgg"
            | "JsonArrayAgg"
            | "MergeSupportFunc") => {
                let function = match name {
                    "JsonSerializeExpr" => "json_serialize",
                    "JsonParseExpr" => "json",
                    "JsonScalarExpr" => "json_scalar",
                    "JsonFuncExpr" => match node.int("op") {
                        Some(op) if op == JsonExprOp::JsonExistsOp as i64 => "json_exists",
                        Some(op) if op == JsonExprOp::JsonQueryOp as i64 => "json_query",
                        _ => "json_value",
                    },
                    "JsonObjectConstructor" => "json_object",
                    "JsonObjectAgg" => "json_objectagg",
                    "JsonArrayAgg" => "json_arrayagg",
                    "MergeSupportFunc" => "merge_action",
                    _ => "json_array",
                };
                self.facts.functions.insert(function.to_owned());
            }
            // `(x).f` is a field of x, or, when x has no field f, the call
            // `f(x)`: `(0.5::float8).pg_sleep`, `('select ...'::text).ts_stat`.
            // Which one only the target knows, so it counts as a call.
            "AIndirection" => {
                for part in node.list("indirection") {
                    if let Value::Struct(string) = part {
                        if string.name == "String" {
                            self.facts
                                .functions
                                .insert(normalise_name([string.str("sval")]));
                        }
                    }
                }
            }
            "SelectStmt" => {
                if is_set_operation(node) {
                    self.facts.renames = true;
                }
                if node.has("into_clause") {
                    self.facts.kinds.insert(StatementKind::Ddl);
                }
                if !node.list("from_clause").is_empty() {
                    self.facts.kinds.insert(StatementKind::Select);
                }
                if !node.list("locking_clause").is_empty() {
                    self.facts.locks_rows = true;
                }
            }
            "InsertStmt" => {
                self.facts.kinds.insert(StatementKind::Insert);
                if upserts_every_row(node) {
                    self.facts.has_where = false;
                }
            }
            "UpdateStmt" => self.record_modification(node, StatementKind::Update),
            "DeleteStmt" => self.record_modification(node, StatementKind::Delete),
            "MergeStmt" => {
                self.facts.kinds.insert(StatementKind::Merge);
                // MERGE's ON is a join condition (`on true` joins every
                // row): an UPDATE or DELETE action is bounded by its own
                // `WHEN MATCHED AND ...` condition, which must look at the
                // target's row unless ON ties the target to the source.
                let target = target_name(node);
                let tied = node
                    .get("join_condition")
                    .is_some_and(|on| reads_the_target(on, &target));
                for clause in node.list("merge_when_clauses") {
                    let Value::Struct(clause) = clause else {
                        continue;
                    };
                    let changes = [CmdType::CmdUpdate, CmdType::CmdDelete]
                        .iter()
                        .any(|cmd| clause.int("command_type") == Some(*cmd as i64));
                    let bounded = clause.get("condition").is_some_and(|condition| {
                        reads_the_target(condition, &target) || (tied && reads_a_row(condition))
                    });
                    if changes && !bounded {
                        self.facts.has_where = false;
                    }
                }
            }
            "MergeWhenClause" => {
                let command = node.int("command_type");
                let kind = [
                    (CmdType::CmdInsert, StatementKind::Insert),
                    (CmdType::CmdUpdate, StatementKind::Update),
                    (CmdType::CmdDelete, StatementKind::Delete),
                ]
                .into_iter()
                .find(|(cmd, _)| Some(*cmd as i64) == command);
                if let Some((_, kind)) = kind {
                    self.facts.kinds.insert(kind);
                }
            }
            "OnConflictClause"
                if node.int("action") == Some(OnConflictAction::OnconflictUpdate as i64) =>
            {
                self.facts.kinds.insert(StatementKind::Update);
            }
            "ExecuteStmt" => self.facts.executes = Some(node.str("name").to_owned()),
            // SET inside ALTER DATABASE ... SET, ALTER FUNCTION ... SET or
            // CREATE FUNCTION ... SET changes the role of later sessions or
            // calls.
            "VariableSetStmt" => {
                let variable = node.str("name").to_ascii_lowercase();
                self.facts.settings.insert(if variable.is_empty() {
                    "*".to_owned()
                } else {
                    variable.clone()
                });
                if variable == "role" || variable == "session_authorization" {
                    self.facts.kinds.insert(StatementKind::Dcl);
                }
            }
            "RangeSubselect" | "RangeFunction" | "RangeTableFunc" | "JsonTable"
            | "CommonTableExpr" => {
                self.facts.renames = true;
            }
            // `JOIN ... USING` and `NATURAL JOIN` merge two columns into one
            // (compared with `=`); an alias on a join renames the relations
            // inside it.
            "JoinExpr" => {
                let merges = matches!(node.get("is_natural"), Some(Value::Bool(true)))
                    || !node.list("using_clause").is_empty();
                if merges {
                    self.facts.operators.insert("=".to_owned());
                }
                if merges || node.has("alias") {
                    self.facts.renames = true;
                }
            }
            "AExpr" => self.record_operator_expr(node),
            "SortBy" => self.record_operator(node.list("use_op")),
            // `x IN (select ...)` is `x = ANY (select ...)`.
            "SubLink" => match node.list("oper_name") {
                [] if node.int("sub_link_type") == Some(SubLinkType::AnySublink as i64) => {
                    self.facts.operators.insert("=".to_owned());
                }
                name => self.record_operator(name),
            },
            // `CASE x WHEN v` compares `x = v`.
            "CaseExpr" if node.has("arg") => {
                self.facts.operators.insert("=".to_owned());
            }
            "TypeName" => {
                if let Some(name) = qualified_name(node.list("names")) {
                    self.facts.types.insert(name);
                }
            }
            // `customers c(a, b)`: the columns answer to new names.
            "Alias" if !node.list("colnames").is_empty() => {
                self.facts.renames = true;
            }
            "AlterTableCmd" => {
                let privilege_changes = [
                    AlterTableType::AtChangeOwner,
                    AlterTableType::AtEnableRowSecurity,
                    AlterTableType::AtDisableRowSecurity,
                    AlterTableType::AtForceRowSecurity,
                    AlterTableType::AtNoForceRowSecurity,
                ];
                let subtype = node.int("subtype");
                if privilege_changes
                    .iter()
                    .any(|change| Some(*change as i64) == subtype)
                {
                    self.facts.kinds.insert(StatementKind::Dcl);
                }
            }
            _ => {}
        }
    }

    /// The operators an `A_Expr` applies: its own name, or those its
    /// keyword stands for (`BETWEEN` compares with `<=` and `>=`, or `<`
    /// and `>` when negated).
    fn record_operator_expr(&mut self, node: &Struct) {
        let between = [
            AExprKind::AexprBetween,
            AExprKind::AexprNotBetween,
            AExprKind::AexprBetweenSym,
            AExprKind::AexprNotBetweenSym,
        ];
        if between
            .iter()
            .any(|kind| node.int("kind") == Some(*kind as i64))
        {
            for operator in ["<", "<=", ">", ">="] {
                self.facts.operators.insert(operator.to_owned());
            }
        } else {
            self.record_operator(node.list("name"));
        }
    }

    fn record_operator(&mut self, name: &[Value]) {
        if let Some(name) = qualified_name(name) {
            self.facts.operators.insert(name);
        }
    }

    fn record_modification(&mut self, node: &Struct, kind: StatementKind) {
        self.facts.kinds.insert(kind);
        // An UPDATE of `pg_settings` is `set_config` of the settings it
        // names (found in attack: `client_encoding` set unseen), `role`
        // included.
        if kind == StatementKind::Update
            && matches!(node.get("relation"), Some(Value::Struct(r)) if r.str("relname") == "pg_settings")
        {
            self.facts.settings.insert("*".to_owned());
            self.facts.kinds.insert(StatementKind::Dcl);
        }
        // With other relations beside the target (`UPDATE ... FROM`,
        // `DELETE ... USING`), a condition on them alone is the same for
        // every row of the target (found in attack: `update orders set
        // total_cents = 0 from customers c where c.id = 1` changed every
        // order): it must look at the target's row.
        let joined = ["from_clause", "using_clause"]
            .iter()
            .any(|field| !node.list(field).is_empty());
        let bounded = match node.get("where_clause") {
            Some(condition) if joined => reads_the_target(condition, &target_name(node)),
            Some(condition) => reads_a_row(condition),
            None => false,
        };
        if !bounded {
            self.facts.has_where = false;
        }
    }

    fn record_range_var(&mut self, node: &Struct, field: &'static str) {
        let catalog = node.str("catalogname");
        let schema = node.str("schemaname");
        let relation = node.str("relname");
        let unqualified = catalog.is_empty() && schema.is_empty();
        if unqualified && CTE_REFERENCE_FIELDS.contains(&field) && self.scope.contains(&relation) {
            return;
        }
        let name = [catalog, schema, relation]
            .into_iter()
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(".");
        self.facts.tables.insert(name);
        self.facts.relations.insert(relation_ref(node));
    }
}

/// A name given as a list of `String` nodes (`["public", "###"]`), as
/// [`crate::join_name`] writes it; `None` for an empty list or one holding
/// anything else.
fn qualified_name(parts: &[Value]) -> Option<String> {
    let parts: Option<Vec<&str>> = parts
        .iter()
        .map(|part| match part {
            Value::Struct(string) if string.name == "String" => Some(string.str("sval")),
            _ => None,
        })
        .collect();
    parts
        .filter(|parts| !parts.is_empty())
        .map(|parts| crate::join_name(&parts))
}

/// The name the target of an UPDATE, DELETE or MERGE goes by in its
/// statement: its alias, or its name.
fn target_name(statement: &Struct) -> String {
    match statement.get("relation") {
        Some(Value::Struct(relation)) => match relation.get("alias") {
            Some(Value::Struct(alias)) => alias.str("aliasname").to_owned(),
            _ => relation.str("relname").to_owned(),
        },
        _ => String::new(),
    }
}

/// Whether a condition looks at the row of the target named `target`: a
/// column qualified by its name, anywhere, or one not qualified outside a
/// sub-select (which may be the target's; inside one it is first the
/// sub-select's own), or `WHERE CURRENT OF`.
fn reads_the_target(condition: &Value, target: &str) -> bool {
    match condition {
        Value::Struct(node) => match node.name {
            "CurrentOfExpr" => true,
            "ColumnRef" => match node.list("fields") {
                [Value::Struct(only)] => only.name == "String",
                [Value::Struct(qualifier), ..] => {
                    qualifier.name == "String" && qualifier.str("sval") == target
                }
                _ => false,
            },
            "SubLink" => node
                .get("subselect")
                .is_some_and(|inner| qualified_by(inner, target)),
            _ => node
                .fields
                .iter()
                .any(|(_, value)| reads_the_target(value, target)),
        },
        Value::List(items) => items.iter().any(|item| reads_the_target(item, target)),
        _ => false,
    }
}

/// Whether anything under `value` is a column qualified by `target`.
fn qualified_by(value: &Value, target: &str) -> bool {
    match value {
        Value::Struct(node) if node.name == "ColumnRef" => matches!(
            node.list("fields"),
            [Value::Struct(qualifier), _, ..]
                if qualifier.name == "String" && qualifier.str("sval") == target
        ),
        Value::Struct(node) => node
            .fields
            .iter()
            .any(|(_, value)| qualified_by(value, target)),
        Value::List(items) => items.iter().any(|item| qualified_by(item, target)),
        _ => false,
    }
}

/// Whether a condition looks at the row it is tested on: names a column,
/// or is `WHERE CURRENT OF cursor`. One that does not (`true`, `1 = 1`,
/// `$1`, `now() > '2020-01-01'`, `exists (select 1)`) is the same for
/// every row, so it bounds nothing. Constants do not change the answer, so
/// it holds for every statement of the same shape.
fn reads_a_row(condition: &Value) -> bool {
    match condition {
        Value::Struct(node) => {
            matches!(node.name, "ColumnRef" | "CurrentOfExpr")
                || node.fields.iter().any(|(_, value)| reads_a_row(value))
        }
        Value::List(items) => items.iter().any(reads_a_row),
        _ => false,
    }
}

/// Whether `INSERT ... ON CONFLICT DO UPDATE` may update every row of its
/// table: it updates the rows its new rows collide with, which are bounded
/// when the new rows are listed (`VALUES`) or picked by a condition that
/// reads a row, or when the update has such a condition of its own.
fn upserts_every_row(insert: &Struct) -> bool {
    let Some(Value::Struct(on_conflict)) = insert.get("on_conflict_clause") else {
        return false;
    };
    if on_conflict.int("action") != Some(OnConflictAction::OnconflictUpdate as i64)
        || on_conflict.get("where_clause").is_some_and(reads_a_row)
    {
        return false;
    }
    match insert.get("select_stmt") {
        Some(Value::Struct(select)) if select.name == "SelectStmt" => {
            select.list("values_lists").is_empty()
                && !select.get("where_clause").is_some_and(reads_a_row)
        }
        _ => true,
    }
}

/// The lineage's name of the relation a `RangeVar` names. A catalog name is
/// dropped: PostgreSQL only accepts the current database's.
pub(crate) fn relation_ref(range_var: &Struct) -> RelationRef {
    let non_empty = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    let alias = match range_var.get("alias") {
        Some(Value::Struct(alias)) => non_empty(alias.str("aliasname")),
        _ => None,
    };
    RelationRef {
        schema: non_empty(range_var.str("schemaname")),
        name: range_var.str("relname").to_owned(),
        alias,
    }
}

/// Whether a `SelectStmt` is a UNION, INTERSECT or EXCEPT of two others.
pub(crate) fn is_set_operation(select: &Struct) -> bool {
    let op = select.int("op");
    [
        SetOperation::SetopUnion,
        SetOperation::SetopIntersect,
        SetOperation::SetopExcept,
    ]
    .iter()
    .any(|set_op| Some(*set_op as i64) == op)
}

/// The setting a `set_config` call names, when its first argument is a string
/// literal; `*` otherwise (it could name any setting).
fn literal_setting(call: &Struct) -> String {
    match call.list("args").first() {
        Some(Value::Struct(arg)) if arg.name == "AConst" => match arg.get("val") {
            Some(Value::Struct(val)) if val.name == "String" => {
                val.str("sval").to_ascii_lowercase()
            }
            _ => "*".to_owned(),
        },
        _ => "*".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::to_tree;

    fn facts(sql: &str) -> Facts {
        let parsed = pg_query::parse(sql, 0).unwrap();
        let node = parsed.protobuf.stmts[0]
            .stmt
            .as_ref()
            .unwrap()
            .node
            .as_ref()
            .unwrap();
        collect(&to_tree(node).unwrap())
    }

    fn tables(sql: &str) -> Vec<String> {
        facts(sql).tables.into_iter().collect()
    }

    #[test]
    fn cte_scoping_never_hides_a_relation() {
        let cases: &[(&str, &[&str])] = &[
            ("with d as (select 1) select * from d", &[]),
            (
                "with d as (select * from t) select * from d join u on true",
                &["t", "u"],
            ),
            // The DML target is always a relation, whatever CTE shares its name.
            ("with t as (select 1) delete from t", &["t"]),
            ("with t as (select 1) insert into t select * from t", &["t"]),
            ("with t as (select 1) update t set a = 1 from t x", &["t"]),
            // A qualified name is never a CTE.
            ("with t as (select 1) select * from public.t", &["public.t"]),
            // A CTE defined in a subquery is not visible outside it.
            (
                "select * from s, (with s as (select 1) select * from s) x",
                &["s"],
            ),
            // Without RECURSIVE a CTE does not see itself or later CTEs.
            (
                "with a as (select * from b), b as (select 1) select * from a",
                &["b"],
            ),
            ("with f as (select * from f) select * from f", &["f"]),
            (
                "with recursive f as (select 1 union all select * from f) select * from f",
                &[],
            ),
            ("select * from cat.sch.rel", &["cat.sch.rel"]),
        ];
        for (sql, expected) in cases {
            assert_eq!(tables(sql), *expected, "{sql}");
        }
    }

    #[test]
    fn finds_effects_where_pg_query_nodes_does_not_look() {
        let cases: &[(&str, &str)] = &[
            ("values (nextval('s'))", "nextval"),
            (
                "select array[pg_terminate_backend(1)]",
                "pg_terminate_backend",
            ),
            (
                "insert into t values (1) returning lo_unlink(1)",
                "lo_unlink",
            ),
            ("select 1 limit f()", "f"),
            ("select count(*) filter (where g()) from t", "g"),
            ("select row_number() over (order by h()) from t", "h"),
            (
                "merge into t using s on t.a = s.a when matched then update set b = m()",
                "m",
            ),
            ("select (x).y from (select k() as x) z", "k"),
        ];
        for (sql, function) in cases {
            assert!(facts(sql).functions.contains(*function), "{sql}");
        }
    }

    #[test]
    fn has_where() {
        assert!(facts("delete from t where a = 1").has_where);
        assert!(facts("delete from t where current of c").has_where);
        assert!(!facts("delete from t").has_where);
        assert!(!facts("with d as (update t set a = 1) select 1 from t where a = 1").has_where);
        assert!(facts("insert into t values (1) on conflict (a) do update set b = 2").has_where);
        // A condition that does not look at the row bounds nothing.
        for sql in [
            "update t set a = 1 where true",
            "update t set a = 1 where 1 = 1",
            "delete from t where $1",
            "delete from t where now() > '2020-01-01'",
            "delete from t where exists (select 1)",
            "merge into t using s on t.id = s.id when matched and true then update set a = 1",
            "insert into t select * from t on conflict (id) do update set a = excluded.a",
            "insert into t select * from t where true on conflict (id) do update set a = 1",
            // Found in attack: conditions on the other relations alone.
            "update orders set total_cents = 0 from customers c where c.id = 1",
            "delete from orders using customers c where c.id = 1",
            "delete from orders o using customers c where c.id = 1 and exists (select id from customers)",
            "merge into orders o using customers c on true when matched and c.id = 1 then delete",
        ] {
            assert!(!facts(sql).has_where, "{sql}");
        }
        let settings = facts(
            "update pg_catalog.pg_settings set setting = 'SJIS' where name = 'client_encoding'",
        );
        assert!(settings.settings.contains("*") && settings.kinds.contains(&StatementKind::Dcl));
        for sql in [
            "update t set a = 1 where a = 1",
            "update t set a = 1 where true and id = 2",
            "delete from t where id in (select id from gone)",
            "insert into t select * from s where s.day = 1 on conflict (id) do update set a = 1",
            "insert into t select * from s on conflict (id) do update set a = 1 where t.a < 5",
            "insert into t values (1), (2) on conflict (id) do update set a = 1",
            "insert into t select * from s on conflict (id) do nothing",
            "insert into t select * from s",
            "update orders set total_cents = 0 from customers c where c.id = orders.customer_id",
            "update orders o set total_cents = 0 from customers c where c.id = o.customer_id",
            "delete from orders using customers c where c.id = customer_id",
            "delete from orders o using customers c where exists (select 1 from x where x.id = o.id)",
            "merge into orders o using customers c on true when matched and o.id = c.id then delete",
        ] {
            assert!(facts(sql).has_where, "{sql}");
        }
        assert!(!facts("merge into t using s on true when matched then delete").has_where);
        assert!(
            !facts("merge into t using s on t.id = s.id when matched then update set a = 1")
                .has_where
        );
        assert!(
            facts("merge into t using s on t.id = s.id when matched and s.gone then delete")
                .has_where
        );
        assert!(
            facts("merge into t using s on t.id = s.id when not matched then insert values (1)")
                .has_where
        );
    }
}
