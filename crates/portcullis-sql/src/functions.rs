//! Which functions a statement may call without being suspected of writing.
//!
//! A function call is judged by name only: the classifier has no catalog, so
//! it cannot see what a user-defined function does. Names in
//! [`READ_ONLY_FUNCTIONS`] are PostgreSQL built-ins that change neither data
//! nor state; any other name makes the statement a `Call`, and the names in
//! [`PRIVILEGE_FUNCTIONS`] make it `Dcl`.
//!
//! The lists are of built-ins: a user who can create `public.lower(my_type)`
//! can make `lower(...)` run their code, since an overload with an exact
//! argument type wins over `pg_catalog`'s. The PostgreSQL gateway checks
//! names against the functions users made on the target, and decides a
//! statement naming one as a call (`portcullis_pg`'s `hidden.rs`).

/// How calling a function affects the statement that calls it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FunctionEffect {
    /// A built-in known to change neither data nor state.
    ReadOnly,
    /// A built-in that can change the session's identity or privileges.
    Privilege,
    /// Anything else: it may write, so the statement is a `Call`.
    Unknown,
}

/// The effect of calling `name`, as normalised by [`normalise_name`].
pub(crate) fn function_effect(name: &str) -> FunctionEffect {
    if PRIVILEGE_FUNCTIONS.binary_search(&name).is_ok() {
        FunctionEffect::Privilege
    } else if READ_ONLY_FUNCTIONS.binary_search(&name).is_ok() {
        FunctionEffect::ReadOnly
    } else {
        FunctionEffect::Unknown
    }
}

/// Whether calling `name` (as normalised by [`normalise_name`]) with
/// `n_args` arguments runs SQL given as text, or reads a relation or cursor
/// given by name: what it returns cannot be followed from the statement's
/// text. Checked apart from the read-only list, so that a name added there
/// for its lack of writes does not make its output look traceable.
pub(crate) fn runs_query_text(name: &str, n_args: usize) -> bool {
    QUERY_TEXT_FUNCTIONS.binary_search(&name).is_ok()
        || QUERY_TEXT_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
        // `ts_rewrite(query, select)` runs `select`; the three-argument form
        // only substitutes.
        || (name == "ts_rewrite" && n_args != 3)
}

/// Whether a function (a name from [`StatementInfo::functions`]) may run SQL
/// given as text, or read a relation or cursor given by name: a statement
/// calling it may read any table, whatever relations it names.
///
/// [`StatementInfo::functions`]: portcullis_core::StatementInfo::functions
pub fn runs_query_text_function(name: &str) -> bool {
    // `ts_rewrite` runs a query in one of its forms; the argument count is
    // not known here, so it counts.
    runs_query_text(name, 0)
}

/// Whether a function (a name from [`StatementInfo::functions`]) runs a
/// portal given by name, as FETCH does: `cursor_to_xml` fetches from it, so a
/// portal bound from a `DELETE ... RETURNING` deletes. (`cursor_to_xmlschema`
/// only reads the portal's row type.)
///
/// [`StatementInfo::functions`]: portcullis_core::StatementInfo::functions
pub fn runs_portal_function(name: &str) -> bool {
    name == "cursor_to_xml"
}

/// Built-ins (and `xml2`'s `xpath_table`) that run a query given as text or
/// read a relation or cursor given by name.
// INVARIANT: sorted (byte order) and without duplicates, for `binary_search`;
// a unit test checks it.
const QUERY_TEXT_FUNCTIONS: &[&str] = &[
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "query_to_xml",
    "query_to_xml_and_xmlschema",
    "query_to_xmlschema",
    "table_to_xml",
    "table_to_xml_and_xmlschema",
    "table_to_xmlschema",
    "ts_stat",
    "xpath_table",
];

/// Families of such functions: `schema_to_xml_and_xmlschema`,
/// `database_to_xmlschema`, `dblink_get_result`, ...
const QUERY_TEXT_PREFIXES: &[&str] = &["database_to_xml", "dblink", "schema_to_xml"];

/// A function's name as a statement lists it: a `pg_catalog.` schema
/// dropped (a built-in is known by its bare name), as is the database of
/// a three-part name; written by [`join_name`], so that a name holding a
/// dot (`"pg_catalog.lower"`, a user's function) stays apart from the
/// built-in it mimics.
pub(crate) fn normalise_name<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut parts: Vec<&str> = parts.into_iter().collect();
    if parts.len() == 3 {
        parts.remove(0);
    }
    if parts.len() == 2 && parts[0] == "pg_catalog" {
        parts.remove(0);
    }
    join_name(&parts)
}

/// A name given in parts (schema, name) as one string: the parts joined
/// with dots, and a part that holds a dot or a double quote quoted as SQL
/// quotes it (`public."a.b"`), so that [`name_parts`] gives the parts back.
pub fn join_name(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|part| {
            if part.contains(['.', '"']) {
                format!("\"{}\"", part.replace('"', "\"\""))
            } else {
                (*part).to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The parts of a name [`join_name`] wrote.
pub fn name_parts(name: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut part = String::new();
    let mut chars = name.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                part.push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut part)),
            c => part.push(c),
        }
    }
    parts.push(part);
    parts
}

/// Built-ins that can change the session's role (`set_config('role', ...)`
/// is `SET ROLE` in a function call), or act on other sessions: every
/// session reaches the target as the same role, so cancelling or ending
/// another backend acts on someone else's session.
pub(crate) const PRIVILEGE_FUNCTIONS: &[&str] =
    &["pg_cancel_backend", "pg_terminate_backend", "set_config"];

/// Built-ins that read but do not write: aggregates, window functions,
/// string, math, date, JSON, array and catalog-information functions.
///
/// Deliberately absent, so that they make a statement a `Call`: sequence
/// changes (`nextval`, `setval`), server signals (`pg_reload_conf`), server file access
/// (`pg_read_file`, `pg_ls_dir`, `lo_import`, `lo_export`), advisory locks,
/// `pg_sleep`, `pg_notify`, `dblink*`, and the `*_to_xml` functions that run
/// a query given as a string.
// INVARIANT: sorted (byte order) and without duplicates, for `binary_search`;
// a unit test checks it.
#[rustfmt::skip]
pub(crate) const READ_ONLY_FUNCTIONS: &[&str] = &[
    "abbrev", "abs", "acldefault", "aclexplode", "acos", "acosd", "acosh", "age", "any_value",
    "array_agg", "array_append", "array_cat", "array_dims", "array_fill", "array_length",
    "array_lower", "array_ndims", "array_position", "array_positions", "array_prepend",
    "array_remove", "array_replace", "array_reverse", "array_sample", "array_shuffle", "array_sort",
    "array_to_json", "array_to_string", "array_to_tsvector", "array_upper", "ascii", "asin",
    "asind", "asinh", "atan", "atan2", "atan2d", "atand", "atanh", "avg", "bit_and", "bit_count",
    "bit_length", "bit_or", "bit_xor", "bool", "bool_and", "bool_or", "bpchar", "broadcast",
    "btrim", "cardinality", "casefold", "cbrt", "ceil", "ceiling", "char_length",
    "character_length", "chr", "clock_timestamp", "col_description", "concat", "concat_ws",
    "convert", "convert_from", "convert_to", "corr", "cos", "cosd", "cosh", "cot", "cotd", "count",
    "covar_pop", "covar_samp", "crc32", "crc32c", "cume_dist", "current_database", "current_query",
    "current_schema", "current_schemas", "current_setting", "currval", "date", "date_add",
    "date_bin", "date_part", "date_subtract", "date_trunc", "decode", "degrees", "dense_rank",
    "div", "encode", "erf", "erfc", "every", "exp", "extract", "factorial", "family", "first_value",
    "float4", "float8", "floor", "format", "format_type", "gamma", "gcd", "gen_random_uuid",
    "generate_series", "generate_subscripts", "get_bit", "get_byte", "getdatabaseencoding",
    "has_any_column_privilege", "has_column_privilege", "has_database_privilege",
    "has_foreign_data_wrapper_privilege", "has_function_privilege", "has_language_privilege",
    "has_largeobject_privilege", "has_parameter_privilege", "has_schema_privilege",
    "has_sequence_privilege", "has_server_privilege", "has_table_privilege",
    "has_tablespace_privilege", "has_type_privilege", "host", "hostmask", "inet",
    "inet_client_addr", "inet_client_port", "inet_merge", "inet_same_family", "inet_server_addr",
    "inet_server_port", "initcap", "int2", "int4", "int8", "interval", "is_normalized", "isempty",
    "isfinite", "json", "json_agg", "json_agg_strict", "json_array", "json_array_elements",
    "json_array_elements_text", "json_array_length", "json_arrayagg", "json_build_array",
    "json_build_object", "json_each", "json_each_text", "json_exists", "json_extract_path",
    "json_extract_path_text", "json_object", "json_object_agg", "json_object_keys",
    "json_objectagg", "json_populate_record", "json_populate_recordset", "json_query",
    "json_scalar", "json_serialize", "json_strip_nulls", "json_to_record", "json_to_recordset",
    "json_typeof", "json_value", "jsonb_agg", "jsonb_agg_strict",
    "jsonb_array_elements", "jsonb_array_elements_text", "jsonb_array_length", "jsonb_build_array",
    "jsonb_build_object", "jsonb_concat", "jsonb_contained", "jsonb_contains", "jsonb_delete",
    "jsonb_delete_path", "jsonb_each", "jsonb_each_text", "jsonb_exists", "jsonb_exists_all",
    "jsonb_exists_any", "jsonb_extract_path", "jsonb_extract_path_text", "jsonb_insert",
    "jsonb_object", "jsonb_object_agg", "jsonb_object_keys", "jsonb_path_exists",
    "jsonb_path_match", "jsonb_path_query", "jsonb_path_query_array", "jsonb_path_query_first",
    "jsonb_populate_record", "jsonb_populate_recordset", "jsonb_pretty", "jsonb_set",
    "jsonb_set_lax", "jsonb_strip_nulls", "jsonb_to_record", "jsonb_to_recordset", "jsonb_typeof",
    "justify_days", "justify_hours", "justify_interval", "lag", "last_value", "lastval", "lcm",
    "lead", "left", "length", "lgamma", "ln", "log", "log10", "lower", "lower_inc", "lower_inf",
    "lpad", "ltrim", "make_date", "make_interval", "make_time", "make_timestamp",
    "make_timestamptz", "makeaclitem", "masklen", "max", "md5", "merge_action", "min", "min_scale", "mod", "mode",
    "netmask", "network", "normalize", "now", "nth_value", "ntile", "num_nonnulls", "num_nulls",
    "numeric", "numnode", "obj_description", "octet_length", "overlaps", "overlay", "parse_ident",
    "percent_rank", "percentile_cont", "percentile_disc", "pg_backend_pid", "pg_basetype",
    "pg_blocking_pids", "pg_char_to_encoding", "pg_client_encoding", "pg_collation_for",
    "pg_collation_is_visible", "pg_column_compression", "pg_column_size", "pg_conf_load_time",
    "pg_conversion_is_visible", "pg_database_size", "pg_describe_object", "pg_encoding_to_char",
    "pg_filenode_relation", "pg_function_is_visible", "pg_get_constraintdef", "pg_get_expr",
    "pg_get_function_arguments", "pg_get_function_identity_arguments", "pg_get_function_result",
    "pg_get_functiondef", "pg_get_indexdef", "pg_get_keywords", "pg_get_partition_constraintdef",
    "pg_get_partkeydef", "pg_get_ruledef", "pg_get_serial_sequence", "pg_get_statisticsobjdef",
    "pg_get_statisticsobjdef_columns", "pg_get_statisticsobjdef_expressions", "pg_get_triggerdef",
    "pg_get_userbyid", "pg_get_viewdef", "pg_has_role", "pg_identify_object",
    "pg_identify_object_as_address", "pg_index_column_has_property", "pg_index_has_property",
    "pg_indexam_has_property", "pg_indexes_size", "pg_input_error_info", "pg_input_is_valid",
    "pg_is_in_recovery", "pg_is_other_temp_schema", "pg_jit_available", "pg_my_temp_schema",
    "pg_opclass_is_visible", "pg_operator_is_visible", "pg_opfamily_is_visible",
    "pg_options_to_table", "pg_partition_ancestors", "pg_partition_root", "pg_partition_tree",
    "pg_postmaster_start_time", "pg_relation_filenode", "pg_relation_filepath", "pg_relation_size",
    "pg_size_bytes", "pg_size_pretty", "pg_statistics_obj_is_visible", "pg_table_is_visible",
    "pg_table_size", "pg_tablespace_location", "pg_tablespace_size", "pg_total_relation_size",
    "pg_trigger_depth", "pg_ts_config_is_visible", "pg_ts_dict_is_visible",
    "pg_ts_parser_is_visible", "pg_ts_template_is_visible", "pg_type_is_visible", "pg_typeof",
    "phraseto_tsquery", "pi", "plainto_tsquery", "position", "power", "querytree", "quote_ident",
    "quote_literal", "quote_nullable", "radians", "random", "random_normal", "range_agg",
    "range_intersect_agg", "range_merge", "rank", "regexp_count", "regexp_instr", "regexp_like",
    "regexp_match", "regexp_matches", "regexp_replace", "regexp_split_to_array",
    "regexp_split_to_table", "regexp_substr", "regr_avgx", "regr_avgy", "regr_count",
    "regr_intercept", "regr_r2", "regr_slope", "regr_sxx", "regr_sxy", "regr_syy", "repeat",
    "replace", "reverse", "right", "round", "row_number", "row_security_active", "row_to_json",
    "rpad", "rtrim", "scale", "session_user", "set_masklen", "setweight", "sha224", "sha256",
    "sha384", "sha512", "shobj_description", "sign", "sin", "sind", "sinh", "split_part", "sqrt",
    "starts_with", "statement_timestamp", "stddev", "stddev_pop", "stddev_samp", "string_agg",
    "string_to_array", "string_to_table", "strip", "strpos", "substr", "substring", "sum", "tan",
    "tand", "tanh", "text", "time", "timeofday", "timestamp", "timestamptz", "timezone", "to_ascii",
    "to_bin", "to_char", "to_date", "to_hex", "to_json", "to_jsonb", "to_number", "to_oct",
    "to_regclass", "to_regcollation", "to_regnamespace", "to_regoper", "to_regoperator",
    "to_regproc", "to_regprocedure", "to_regrole", "to_regtype", "to_regtypemod", "to_timestamp",
    "to_tsquery", "to_tsvector", "transaction_timestamp", "translate", "trim_array", "trim_scale",
    "trunc", "ts_delete", "ts_filter", "ts_headline", "ts_rank", "ts_rank_cd", "tsvector_to_array",
    "unistr", "unnest", "upper", "upper_inc", "upper_inf", "uuid_extract_timestamp",
    "uuid_extract_version", "uuidv4", "uuidv7", "var_pop", "var_samp", "varchar", "variance",
    "version", "websearch_to_tsquery", "width_bucket", "xml_is_well_formed",
    "xml_is_well_formed_content", "xml_is_well_formed_document", "xmlagg", "xmlcomment", "xmltext",
    "xpath", "xpath_exists",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_and_unique() {
        for list in [
            READ_ONLY_FUNCTIONS,
            PRIVILEGE_FUNCTIONS,
            QUERY_TEXT_FUNCTIONS,
        ] {
            for pair in list.windows(2) {
                assert!(
                    pair[0] < pair[1],
                    "{} must sort before {}",
                    pair[0],
                    pair[1]
                );
            }
        }
    }

    #[test]
    fn effects() {
        let cases = [
            ("count", FunctionEffect::ReadOnly),
            ("lower", FunctionEffect::ReadOnly),
            ("set_config", FunctionEffect::Privilege),
            ("nextval", FunctionEffect::Unknown),
            ("pg_terminate_backend", FunctionEffect::Privilege),
            ("pg_cancel_backend", FunctionEffect::Privilege),
            ("public.lower", FunctionEffect::Unknown),
            ("Lower", FunctionEffect::Unknown),
        ];
        for (name, effect) in cases {
            assert_eq!(function_effect(name), effect, "{name}");
        }
    }

    #[test]
    fn functions_that_run_query_text() {
        let cases = [
            ("query_to_xml", 4, true),
            ("cursor_to_xmlschema", 4, true),
            ("schema_to_xml_and_xmlschema", 4, true),
            ("database_to_xml", 3, true),
            ("dblink", 2, true),
            ("dblink_get_result", 1, true),
            ("ts_stat", 1, true),
            ("ts_rewrite", 2, true),
            ("ts_rewrite", 3, false),
            ("xpath", 2, false),
            ("lower", 1, false),
        ];
        for (name, n_args, expected) in cases {
            assert_eq!(runs_query_text(name, n_args), expected, "{name}/{n_args}");
        }
    }

    #[test]
    fn normalises_names() {
        assert_eq!(normalise_name(["pg_catalog", "now"]), "now");
        assert_eq!(normalise_name(["public", "f"]), "public.f");
        assert_eq!(normalise_name(["PG_CATALOG", "now"]), "PG_CATALOG.now");
        // PostgreSQL takes the current database's name before the schema.
        assert_eq!(normalise_name(["db", "pg_catalog", "now"]), "now");
        assert_eq!(normalise_name(["db", "public", "f"]), "public.f");
        assert_eq!(normalise_name(["f"]), "f");
        // A name that holds a dot is no built-in's.
        assert_eq!(normalise_name(["pg_catalog.lower"]), "\"pg_catalog.lower\"");
        assert_eq!(
            normalise_name(["public", "pg_catalog.lower"]),
            "public.\"pg_catalog.lower\""
        );
        assert_eq!(
            function_effect(&normalise_name(["pg_catalog.lower"])),
            FunctionEffect::Unknown
        );
        for parts in [
            &["f"][..],
            &["public", "f"],
            &["a.b"],
            &["s.x", "say \"hi\"."],
            &["pg_catalog", "lower"],
        ] {
            assert_eq!(name_parts(&join_name(parts)), parts, "{parts:?}");
        }
    }
}
