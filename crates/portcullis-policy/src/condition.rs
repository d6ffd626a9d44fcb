//! A Cedar policy's condition as the gateway evaluates it: the same
//! decisions as the condition as written, with less work per request.
//!
//! Cedar builds the value of a set literal afresh each time it evaluates
//! one, hashing every element into the set's lookup table: a quarter of a
//! quickstart `query` decision went to `["select", "insert", ...]
//! .contains(context.statement.kind)`. A set of literals asked whether it
//! contains an attribute (`context.statement.kind`, `principal.email`) is
//! rewritten into comparisons of the attribute with each literal,
//! `v == "select" || v == "insert" || ...` (grouped in halves, so that the
//! condition nests a few levels deeper, not one per literal), which decide
//! the same: `contains` on a set of literals is true exactly when the value
//! equals one of them (Cedar compares both the same way), reading an
//! attribute gives the same value or the same error each time, and the
//! literals cannot fail. Only a deeper stack is needed: where the prepared
//! condition fails, the condition as written is evaluated instead
//! (`Scoped::evaluate` in cedar.rs). Test builds check every decision
//! against Cedar's own `Authorizer` on the policies as written
//! (`Scoped::check`).
//!
//! [`depth`] measures how deep a condition nests, without recursing: a
//! policy deeper than [`MAX_DEPTH`] is refused when loaded.

use cedar_policy_core::ast::{BinaryOp, Expr, ExprKind};
use std::collections::BTreeMap;

/// Sets larger than this are left as they are: past it, the comparisons
/// would read the value more times than building the set costs.
const LARGEST_SET: usize = 32;

/// How deep a policy's condition may nest (its scope adds three levels).
/// Evaluating, printing and freeing a condition recurse once per level:
/// Cedar's evaluator stops with an error where the stack runs low (so a
/// deep policy would deny whatever it was meant to decide), and other
/// parts would overflow it. Policies people write nest a few dozen levels
/// at most; `a || b || c` nests one per term.
pub(crate) const MAX_DEPTH: usize = 100;

/// How many levels `expr` nests: a literal or variable is one.
pub(crate) fn depth(expr: &Expr) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(expr, 1)];
    while let Some((expr, depth)) = pending.pop() {
        deepest = deepest.max(depth);
        pending.extend(children(expr).into_iter().map(|child| (child, depth + 1)));
    }
    deepest
}

/// The expressions `expr` is made of, one level down.
pub(crate) fn children(expr: &Expr) -> Vec<&Expr> {
    match expr.expr_kind() {
        ExprKind::Lit(_) | ExprKind::Var(_) | ExprKind::Slot(_) | ExprKind::Unknown(_) => {
            Vec::new()
        }
        ExprKind::If {
            test_expr,
            then_expr,
            else_expr,
        } => vec![test_expr, then_expr, else_expr],
        ExprKind::And { left, right } | ExprKind::Or { left, right } => vec![left, right],
        ExprKind::BinaryApp { arg1, arg2, .. } => vec![arg1, arg2],
        ExprKind::UnaryApp { arg: expr, .. }
        | ExprKind::GetAttr { expr, .. }
        | ExprKind::HasAttr { expr, .. }
        | ExprKind::ExtHasAttr { expr, .. }
        | ExprKind::Like { expr, .. }
        | ExprKind::Is { expr, .. } => vec![expr],
        ExprKind::ExtensionFunctionApp { args, .. } => args.iter().collect(),
        ExprKind::Set(members) => members.iter().collect(),
        ExprKind::Record(fields) => fields.values().collect(),
    }
}

/// `expr` with every `[literals].contains(attribute)` turned into
/// comparisons. Recurses once per level: for conditions within
/// [`MAX_DEPTH`].
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
            Some(literals) if is_attribute(arg2) => {
                let comparisons: Vec<Expr> = literals
                    .into_iter()
                    .map(|literal| Expr::is_eq((**arg2).clone(), literal.clone()))
                    .collect();
                match any(&comparisons) {
                    Some(any) => any,
                    None => return expr.clone(),
                }
            }
            _ => Expr::binary_app(BinaryOp::Contains, prepared(arg1), prepared(arg2)),
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

/// `terms[0] || terms[1] || ...`, evaluated in that order, grouped in
/// halves: it nests a level per halving, not per term.
fn any(terms: &[Expr]) -> Option<Expr> {
    match terms {
        [] => None,
        [one] => Some(one.clone()),
        _ => {
            let (left, right) = terms.split_at(terms.len() / 2);
            Some(Expr::or(any(left)?, any(right)?))
        }
    }
}

/// A variable or an attribute of one (`context.statement.kind`): what
/// reading it gives does not change within a request.
fn is_attribute(mut expr: &Expr) -> bool {
    loop {
        match expr.expr_kind() {
            ExprKind::Var(_) => return true,
            ExprKind::GetAttr { expr: of, .. } => expr = of,
            _ => return false,
        }
    }
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
            // Grouped in halves, evaluated in order.
            (
                r#"["a", "b", "c", "d", "e"].contains(principal.email)"#,
                r#"(principal.email == "a") || (principal.email == "b") || ((principal.email == "c") || ((principal.email == "d") || (principal.email == "e")))"#,
            ),
            // Only an attribute is compared more than once; what is asked
            // about another value is prepared in place.
            (
                r#"[true].contains(["a"].contains(context.k))"#,
                r#"[true].contains(context.k == "a")"#,
            ),
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

    #[test]
    fn depth_counts_levels_without_recursing() {
        let expr = |text: &str| Expr::from_str(text).unwrap();
        assert_eq!(depth(&expr("true")), 1);
        assert_eq!(depth(&expr("context.a")), 2);
        assert_eq!(depth(&expr("context.a || context.b || true")), 4);
        assert_eq!(
            depth(&expr("if context.a then 1 else if context.b then 2 else 3")),
            4
        );
        // Far deeper than any recursion would survive on a test's stack.
        let mut deep = Expr::val(true);
        for _ in 0..200_000 {
            deep = Expr::not(deep);
        }
        assert_eq!(depth(&deep), 200_001);
        // Freed a level at a time, not recursively.
        while let ExprKind::UnaryApp { arg, .. } = deep.expr_kind() {
            let next = (**arg).clone();
            deep = next;
        }
    }
}
