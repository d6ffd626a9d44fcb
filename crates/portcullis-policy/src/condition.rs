//! A Cedar policy's condition as the gateway evaluates it: the same
//! decisions as the condition as written, with less work per request.
//!
//! Cedar builds the value of a set literal afresh each time it evaluates
//! one, hashing every element into the set's lookup table: a quarter of a
//! quickstart `query` decision went to `["select", "insert", ...]
//! .contains(context.statement.kind)`. A set of literals asked whether it
//! contains a value is rewritten into comparisons of the value with each
//! literal, `v == "select" || v == "insert" || ...`, which decide the same:
//! `contains` on a set of literals is true exactly when the value equals one
//! of them (Cedar compares both the same way), the value is evaluated first
//! either way, so an error in it is the same error, and the literals cannot
//! fail. Test builds check every decision against Cedar's own `Authorizer`
//! on the policies as written (`Scoped::check` in cedar.rs).

use cedar_policy_core::ast::{BinaryOp, Expr, ExprKind};
use std::collections::BTreeMap;

/// Sets larger than this are left as they are: past it, the comparisons
/// would evaluate the value more times than building the set costs.
const LARGEST_SET: usize = 32;

/// `expr` with every `[literals].contains(value)` turned into comparisons.
pub(crate) fn prepared(expr: &Expr) -> Expr {
    let loc = expr.source_loc().cloned();
    let rebuilt = match expr.expr_kind() {
        ExprKind::Lit(_) | ExprKind::Var(_) | ExprKind::Slot(_) | ExprKind::Unknown(_) => {
            return expr.clone()
        }
        ExprKind::BinaryApp {
            op: BinaryOp::Contains,
            arg1,
            arg2,
        } => match literals(arg1) {
            Some(literals) => {
                let value = prepared(arg2);
                let mut comparisons = literals
                    .iter()
                    .map(|literal| Expr::is_eq(value.clone(), (*literal).clone()));
                match comparisons.next() {
                    Some(first) => comparisons.fold(first, Expr::or),
                    None => return expr.clone(),
                }
            }
            None => Expr::binary_app(BinaryOp::Contains, prepared(arg1), prepared(arg2)),
        },
        ExprKind::If {
            test_expr,
            then_expr,
            else_expr,
        } => Expr::ite(
            prepared(test_expr),
            prepared(then_expr),
            prepared(else_expr),
        ),
        ExprKind::And { left, right } => Expr::and(prepared(left), prepared(right)),
        ExprKind::Or { left, right } => Expr::or(prepared(left), prepared(right)),
        ExprKind::UnaryApp { op, arg } => Expr::unary_app(*op, prepared(arg)),
        ExprKind::BinaryApp { op, arg1, arg2 } => {
            Expr::binary_app(*op, prepared(arg1), prepared(arg2))
        }
        ExprKind::ExtensionFunctionApp { fn_name, args } => {
            Expr::call_extension_fn(fn_name.clone(), args.iter().map(prepared).collect())
        }
        ExprKind::GetAttr { expr, attr } => Expr::get_attr(prepared(expr), attr.clone()),
        ExprKind::HasAttr { expr, attr } => Expr::has_attr(prepared(expr), attr.clone()),
        ExprKind::ExtHasAttr { expr, attrs } => {
            Expr::extended_has_attr(prepared(expr), attrs.clone())
        }
        ExprKind::Like { expr, pattern } => Expr::like(prepared(expr), pattern.clone()),
        ExprKind::Is { expr, entity_type } => {
            Expr::is_entity_type(prepared(expr), entity_type.clone())
        }
        ExprKind::Set(members) => Expr::set(members.iter().map(prepared)),
        ExprKind::Record(fields) => {
            let fields: BTreeMap<_, _> = fields
                .iter()
                .map(|(name, e)| (name.clone(), prepared(e)))
                .collect();
            // The names were a record's already: none is there twice.
            match Expr::record(fields) {
                Ok(record) => record,
                Err(_) => return expr.clone(),
            }
        }
    };
    rebuilt.with_maybe_source_loc(loc)
}

/// The members of a set literal of at most [`LARGEST_SET`] literals.
fn literals(expr: &Expr) -> Option<Vec<&Expr>> {
    let ExprKind::Set(members) = expr.expr_kind() else {
        return None;
    };
    if members.len() > LARGEST_SET {
        return None;
    }
    members
        .iter()
        .map(|m| matches!(m.expr_kind(), ExprKind::Lit(_)).then_some(m))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn a_set_of_literals_asked_for_a_value_becomes_comparisons() {
        let cases = [
            (
                r#"["a", "b"].contains(context.kind)"#,
                r#"(context.kind == "a") || (context.kind == "b")"#,
            ),
            (
                r#"!(["a"].contains(context.kind)) && context.n > 1"#,
                r#"(!(context.kind == "a")) && (!(context.n <= 1))"#,
            ),
            // Not a set of literals, empty, or another operator: as written.
            (
                r#"[context.a, "b"].contains("b")"#,
                r#"[context.a, "b"].contains("b")"#,
            ),
            (r#"[].contains(context.a)"#, r#"[].contains(context.a)"#),
            (
                r#"context.args.containsAny(["/", "/*"])"#,
                r#"context.args.containsAny(["/", "/*"])"#,
            ),
        ];
        for (written, evaluated) in cases {
            let expr = Expr::from_str(written).unwrap();
            assert_eq!(prepared(&expr).to_string(), evaluated, "{written}");
        }
    }
}
