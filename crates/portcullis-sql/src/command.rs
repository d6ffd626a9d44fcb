//! The top-level command of a statement: its name, its own effect, and
//! whether it writes by itself.
//!
//! Effects found deeper in the tree (a data-modifying CTE, a function call)
//! are added by `classify.rs`; this module only looks at the statement node.

use pg_query::protobuf::{self, DiscardMode, ObjectType, TransactionStmtKind, VariableSetKind};
use pg_query::NodeEnum;
use portcullis_core::StatementKind;

use crate::objects::object_type_name;

/// What the top-level statement node does by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Command {
    pub kind: StatementKind,
    /// Upper case, as PostgreSQL names the command.
    pub name: String,
    /// Whether the command itself changes data or state on the target.
    pub writes: bool,
    /// Whether the command removes every row of its relations (TRUNCATE).
    pub deletes_all_rows: bool,
    /// Relations the command names outside a `RangeVar` (DROP TABLE).
    pub named_relations: Vec<String>,
}

fn command(kind: StatementKind, name: impl Into<String>, writes: bool) -> Command {
    Command {
        kind,
        name: name.into(),
        writes,
        deletes_all_rows: false,
        named_relations: Vec::new(),
    }
}

fn ddl(name: impl Into<String>) -> Command {
    command(StatementKind::Ddl, name, true)
}

fn dcl(name: impl Into<String>) -> Command {
    command(StatementKind::Dcl, name, true)
}

/// `AccessShareLock` in PostgreSQL's `lockdefs.h`.
const ACCESS_SHARE_LOCK: i32 = 1;

fn utility(name: &str, writes: bool) -> Command {
    command(StatementKind::Utility, name, writes)
}

fn object(object_type: i32) -> &'static str {
    object_type_name(ObjectType::try_from(object_type).unwrap_or(ObjectType::Undefined))
}

/// The command of the top-level statement `node`.
///
/// `writes` is true for every command that changes data, schema,
/// privileges, server files or session state (SET), false for reads, SHOW,
/// transaction control, and utilities that leave data alone (LISTEN, FETCH,
/// LOCK, DISCARD PLANS, ...). A command this function does not know is
/// `Other` and writes: nothing can be proven about it.
pub(crate) fn command_of(node: &NodeEnum) -> Command {
    use StatementKind as K;
    match node {
        NodeEnum::SelectStmt(select) if select.into_clause.is_some() => ddl("SELECT INTO"),
        NodeEnum::SelectStmt(_) => command(K::Select, "SELECT", false),
        NodeEnum::InsertStmt(_) => command(K::Insert, "INSERT", true),
        NodeEnum::UpdateStmt(_) => command(K::Update, "UPDATE", true),
        NodeEnum::DeleteStmt(_) => command(K::Delete, "DELETE", true),
        NodeEnum::MergeStmt(_) => command(K::Merge, "MERGE", true),
        NodeEnum::CallStmt(_) => command(K::Call, "CALL", true),
        NodeEnum::DoStmt(_) => command(K::Other, "DO", true),
        NodeEnum::LoadStmt(_) => command(K::Other, "LOAD", true),
        NodeEnum::ExecuteStmt(_) => command(K::Other, "EXECUTE", true),
        NodeEnum::CopyStmt(copy) => copy_command(copy),
        NodeEnum::TruncateStmt(_) => Command {
            deletes_all_rows: true,
            ..command(K::Delete, "TRUNCATE", true)
        },
        NodeEnum::VariableSetStmt(set) => set_command(set),
        NodeEnum::VariableShowStmt(_) => command(K::Set, "SHOW", false),
        NodeEnum::ConstraintsSetStmt(_) => command(K::Set, "SET CONSTRAINTS", true),
        NodeEnum::TransactionStmt(transaction) => {
            command(K::Transaction, transaction_name(transaction.kind), false)
        }
        NodeEnum::DiscardStmt(discard) => match DiscardMode::try_from(discard.target) {
            // DISCARD ALL includes SET SESSION AUTHORIZATION DEFAULT.
            Ok(DiscardMode::DiscardAll) => dcl("DISCARD ALL"),
            Ok(DiscardMode::DiscardTemp) => utility("DISCARD TEMP", true),
            Ok(DiscardMode::DiscardSequences) => utility("DISCARD SEQUENCES", false),
            _ => utility("DISCARD PLANS", false),
        },
        NodeEnum::VacuumStmt(vacuum) if vacuum.is_vacuumcmd => utility("VACUUM", true),
        NodeEnum::VacuumStmt(_) => utility("ANALYZE", true),
        NodeEnum::ClusterStmt(_) => utility("CLUSTER", true),
        NodeEnum::ReindexStmt(_) => utility("REINDEX", true),
        NodeEnum::RefreshMatViewStmt(_) => utility("REFRESH MATERIALIZED VIEW", true),
        NodeEnum::CheckPointStmt(_) => utility("CHECKPOINT", true),
        NodeEnum::NotifyStmt(_) => utility("NOTIFY", true),
        NodeEnum::ListenStmt(_) => utility("LISTEN", false),
        NodeEnum::UnlistenStmt(_) => utility("UNLISTEN", false),
        // PostgreSQL asks for a write privilege for any mode but ACCESS
        // SHARE: the others hold off other sessions' writes or reads.
        NodeEnum::LockStmt(lock) => utility("LOCK TABLE", lock.mode != ACCESS_SHARE_LOCK),
        NodeEnum::FetchStmt(fetch) if fetch.ismove => utility("MOVE", false),
        NodeEnum::FetchStmt(_) => utility("FETCH", false),
        NodeEnum::ClosePortalStmt(_) => utility("CLOSE", false),
        NodeEnum::DeclareCursorStmt(_) => utility("DECLARE CURSOR", false),
        NodeEnum::DeallocateStmt(_) => utility("DEALLOCATE", false),
        NodeEnum::PrepareStmt(_) => utility("PREPARE", false),
        NodeEnum::ExplainStmt(_) => command(K::Select, "EXPLAIN", false),
        // Privileges and identities.
        NodeEnum::GrantStmt(grant) => dcl(if grant.is_grant { "GRANT" } else { "REVOKE" }),
        NodeEnum::GrantRoleStmt(grant) => dcl(if grant.is_grant { "GRANT" } else { "REVOKE" }),
        NodeEnum::CreateRoleStmt(_) => dcl("CREATE ROLE"),
        NodeEnum::AlterRoleStmt(_) | NodeEnum::AlterRoleSetStmt(_) => dcl("ALTER ROLE"),
        NodeEnum::DropRoleStmt(_) => dcl("DROP ROLE"),
        NodeEnum::AlterDefaultPrivilegesStmt(_) => dcl("ALTER DEFAULT PRIVILEGES"),
        NodeEnum::CreatePolicyStmt(_) => dcl("CREATE POLICY"),
        NodeEnum::AlterPolicyStmt(_) => dcl("ALTER POLICY"),
        NodeEnum::AlterOwnerStmt(owner) => dcl(format!("ALTER {}", object(owner.object_type))),
        NodeEnum::ReassignOwnedStmt(_) => dcl("REASSIGN OWNED"),
        NodeEnum::DropOwnedStmt(_) => dcl("DROP OWNED"),
        NodeEnum::SecLabelStmt(_) => dcl("SECURITY LABEL"),
        NodeEnum::CreateUserMappingStmt(_) => dcl("CREATE USER MAPPING"),
        NodeEnum::AlterUserMappingStmt(_) => dcl("ALTER USER MAPPING"),
        NodeEnum::DropUserMappingStmt(_) => dcl("DROP USER MAPPING"),
        NodeEnum::RenameStmt(rename) if rename.rename_type == ObjectType::ObjectRole as i32 => {
            dcl("ALTER ROLE")
        }
        NodeEnum::DropStmt(drop) => drop_command(drop),
        other => ddl_command(other),
    }
}

fn copy_command(copy: &protobuf::CopyStmt) -> Command {
    let direction = if copy.is_from { "FROM" } else { "TO" };
    let endpoint = match (copy.is_program, copy.filename.is_empty(), copy.is_from) {
        (true, _, _) => "PROGRAM",
        (false, true, true) => "STDIN",
        (false, true, false) => "STDOUT",
        (false, false, _) => "FILE",
    };
    // COPY TO a server file writes that file, even though no row changes.
    let writes = copy.is_from || copy.is_program || !copy.filename.is_empty();
    command(
        StatementKind::Copy,
        format!("COPY {direction} {endpoint}"),
        writes,
    )
}

/// SET and RESET. Changing `role` or `session_authorization` changes the
/// privileges of every later statement, so those are `Dcl`; RESET ALL is
/// treated the same way, as it restores settings the gateway may rely on.
fn set_command(set: &protobuf::VariableSetStmt) -> Command {
    // GUC names are case-insensitive: `SET "ROLE" TO x` sets the role.
    let variable = set.name.to_ascii_lowercase();
    let reset = set.kind == VariableSetKind::VarReset as i32;
    let verb = if reset { "RESET" } else { "SET" };
    if set.kind == VariableSetKind::VarResetAll as i32 {
        return dcl("RESET ALL");
    }
    match variable.as_str() {
        "role" => dcl(format!("{verb} ROLE")),
        "session_authorization" => dcl(format!("{verb} SESSION AUTHORIZATION")),
        _ => command(StatementKind::Set, verb, true),
    }
}

fn transaction_name(kind: i32) -> &'static str {
    use TransactionStmtKind as T;
    match TransactionStmtKind::try_from(kind) {
        Ok(T::TransStmtBegin) => "BEGIN",
        Ok(T::TransStmtStart) => "START TRANSACTION",
        Ok(T::TransStmtCommit) => "COMMIT",
        Ok(T::TransStmtRollback) => "ROLLBACK",
        Ok(T::TransStmtSavepoint) => "SAVEPOINT",
        Ok(T::TransStmtRelease) => "RELEASE SAVEPOINT",
        Ok(T::TransStmtRollbackTo) => "ROLLBACK TO SAVEPOINT",
        Ok(T::TransStmtPrepare) => "PREPARE TRANSACTION",
        Ok(T::TransStmtCommitPrepared) => "COMMIT PREPARED",
        Ok(T::TransStmtRollbackPrepared) => "ROLLBACK PREPARED",
        Ok(T::Undefined) | Err(_) => "TRANSACTION",
    }
}

fn drop_command(drop: &protobuf::DropStmt) -> Command {
    let object_type = ObjectType::try_from(drop.remove_type).unwrap_or(ObjectType::Undefined);
    let name = format!("DROP {}", object_type_name(object_type));
    if object_type == ObjectType::ObjectPolicy {
        return dcl(name);
    }
    let names_relations = matches!(
        object_type,
        ObjectType::ObjectTable
            | ObjectType::ObjectView
            | ObjectType::ObjectMatview
            | ObjectType::ObjectForeignTable
            | ObjectType::ObjectSequence
            | ObjectType::ObjectIndex
    );
    let named_relations = if names_relations {
        drop.objects
            .iter()
            .filter_map(|object| qualified_name(object.node.as_ref()?))
            .collect()
    } else {
        Vec::new()
    };
    Command {
        named_relations,
        ..ddl(name)
    }
}

/// `schema.name` from a `List` of `String` nodes, as DROP names relations.
fn qualified_name(node: &NodeEnum) -> Option<String> {
    let NodeEnum::List(list) = node else {
        return None;
    };
    let parts = list
        .items
        .iter()
        .map(|item| match item.node.as_ref() {
            Some(NodeEnum::String(part)) => Some(part.sval.as_str()),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some(parts.join("."))
}

/// Every other statement changes the schema. The names follow PostgreSQL's
/// command tags.
fn ddl_command(node: &NodeEnum) -> Command {
    let name = match node {
        NodeEnum::CreatedbStmt(_) => "CREATE DATABASE".to_owned(),
        NodeEnum::DropdbStmt(_) => "DROP DATABASE".to_owned(),
        NodeEnum::AlterDatabaseStmt(_)
        | NodeEnum::AlterDatabaseSetStmt(_)
        | NodeEnum::AlterDatabaseRefreshCollStmt(_) => "ALTER DATABASE".to_owned(),
        NodeEnum::AlterSystemStmt(_) => "ALTER SYSTEM".to_owned(),
        NodeEnum::CreateStmt(_) => "CREATE TABLE".to_owned(),
        NodeEnum::CreateForeignTableStmt(_) => "CREATE FOREIGN TABLE".to_owned(),
        NodeEnum::CreateTableAsStmt(create)
            if create.objtype == ObjectType::ObjectMatview as i32 =>
        {
            "CREATE MATERIALIZED VIEW".to_owned()
        }
        NodeEnum::CreateTableAsStmt(_) => "CREATE TABLE AS".to_owned(),
        NodeEnum::ViewStmt(_) => "CREATE VIEW".to_owned(),
        NodeEnum::IndexStmt(_) => "CREATE INDEX".to_owned(),
        NodeEnum::AlterTableStmt(alter) => format!("ALTER {}", object(alter.objtype)),
        NodeEnum::AlterTableMoveAllStmt(alter) => format!("ALTER {}", object(alter.objtype)),
        NodeEnum::RenameStmt(rename) => format!("ALTER {}", object(rename_target(rename))),
        NodeEnum::AlterObjectSchemaStmt(alter) => format!("ALTER {}", object(alter.object_type)),
        NodeEnum::AlterObjectDependsStmt(alter) => format!("ALTER {}", object(alter.object_type)),
        NodeEnum::CommentStmt(_) => "COMMENT".to_owned(),
        NodeEnum::CreateSchemaStmt(_) => "CREATE SCHEMA".to_owned(),
        NodeEnum::CreateExtensionStmt(_) => "CREATE EXTENSION".to_owned(),
        NodeEnum::AlterExtensionStmt(_) | NodeEnum::AlterExtensionContentsStmt(_) => {
            "ALTER EXTENSION".to_owned()
        }
        NodeEnum::CreateFunctionStmt(create) if create.is_procedure => {
            "CREATE PROCEDURE".to_owned()
        }
        NodeEnum::CreateFunctionStmt(_) => "CREATE FUNCTION".to_owned(),
        NodeEnum::AlterFunctionStmt(alter) => format!("ALTER {}", object(alter.objtype)),
        NodeEnum::CreateSeqStmt(_) => "CREATE SEQUENCE".to_owned(),
        NodeEnum::AlterSeqStmt(_) => "ALTER SEQUENCE".to_owned(),
        NodeEnum::DefineStmt(define) => format!("CREATE {}", object(define.kind)),
        NodeEnum::CreateDomainStmt(_) => "CREATE DOMAIN".to_owned(),
        NodeEnum::AlterDomainStmt(_) => "ALTER DOMAIN".to_owned(),
        NodeEnum::CompositeTypeStmt(_)
        | NodeEnum::CreateEnumStmt(_)
        | NodeEnum::CreateRangeStmt(_) => "CREATE TYPE".to_owned(),
        NodeEnum::AlterEnumStmt(_) | NodeEnum::AlterTypeStmt(_) => "ALTER TYPE".to_owned(),
        NodeEnum::AlterCollationStmt(_) => "ALTER COLLATION".to_owned(),
        NodeEnum::CreateTrigStmt(_) => "CREATE TRIGGER".to_owned(),
        NodeEnum::CreateEventTrigStmt(_) => "CREATE EVENT TRIGGER".to_owned(),
        NodeEnum::AlterEventTrigStmt(_) => "ALTER EVENT TRIGGER".to_owned(),
        NodeEnum::RuleStmt(_) => "CREATE RULE".to_owned(),
        NodeEnum::CreatePlangStmt(_) => "CREATE LANGUAGE".to_owned(),
        NodeEnum::CreateCastStmt(_) => "CREATE CAST".to_owned(),
        NodeEnum::CreateConversionStmt(_) => "CREATE CONVERSION".to_owned(),
        NodeEnum::CreateTransformStmt(_) => "CREATE TRANSFORM".to_owned(),
        NodeEnum::CreateOpClassStmt(_) => "CREATE OPERATOR CLASS".to_owned(),
        NodeEnum::CreateOpFamilyStmt(_) => "CREATE OPERATOR FAMILY".to_owned(),
        NodeEnum::AlterOpFamilyStmt(_) => "ALTER OPERATOR FAMILY".to_owned(),
        NodeEnum::AlterOperatorStmt(_) => "ALTER OPERATOR".to_owned(),
        NodeEnum::CreateAmStmt(_) => "CREATE ACCESS METHOD".to_owned(),
        NodeEnum::CreateStatsStmt(_) => "CREATE STATISTICS".to_owned(),
        NodeEnum::AlterStatsStmt(_) => "ALTER STATISTICS".to_owned(),
        NodeEnum::CreateTableSpaceStmt(_) => "CREATE TABLESPACE".to_owned(),
        NodeEnum::DropTableSpaceStmt(_) => "DROP TABLESPACE".to_owned(),
        NodeEnum::AlterTableSpaceOptionsStmt(_) => "ALTER TABLESPACE".to_owned(),
        NodeEnum::CreateFdwStmt(_) => "CREATE FOREIGN DATA WRAPPER".to_owned(),
        NodeEnum::AlterFdwStmt(_) => "ALTER FOREIGN DATA WRAPPER".to_owned(),
        NodeEnum::CreateForeignServerStmt(_) => "CREATE SERVER".to_owned(),
        NodeEnum::AlterForeignServerStmt(_) => "ALTER SERVER".to_owned(),
        NodeEnum::ImportForeignSchemaStmt(_) => "IMPORT FOREIGN SCHEMA".to_owned(),
        NodeEnum::CreatePublicationStmt(_) => "CREATE PUBLICATION".to_owned(),
        NodeEnum::AlterPublicationStmt(_) => "ALTER PUBLICATION".to_owned(),
        NodeEnum::CreateSubscriptionStmt(_) => "CREATE SUBSCRIPTION".to_owned(),
        NodeEnum::AlterSubscriptionStmt(_) => "ALTER SUBSCRIPTION".to_owned(),
        NodeEnum::DropSubscriptionStmt(_) => "DROP SUBSCRIPTION".to_owned(),
        NodeEnum::AlterTsdictionaryStmt(_) => "ALTER TEXT SEARCH DICTIONARY".to_owned(),
        NodeEnum::AlterTsconfigurationStmt(_) => "ALTER TEXT SEARCH CONFIGURATION".to_owned(),
        // Not a statement the SQL grammar produces at the top level.
        _ => return command(StatementKind::Other, "UNKNOWN", true),
    };
    ddl(name)
}

/// The object a RENAME changes: for a column or constraint, its relation.
fn rename_target(rename: &protobuf::RenameStmt) -> i32 {
    let on_relation = [ObjectType::ObjectColumn, ObjectType::ObjectTabconstraint];
    if on_relation
        .iter()
        .any(|object_type| *object_type as i32 == rename.rename_type)
        && rename.relation_type != ObjectType::Undefined as i32
    {
        rename.relation_type
    } else {
        rename.rename_type
    }
}
