//! What the gateway knows of a session's prepared statements and portals,
//! to say what an `EXECUTE` or a protocol Execute runs.
//!
//! The client side records each definition (Parse, Bind, SQL `PREPARE`,
//! `DECLARE`) and each removal (Close, `DEALLOCATE`, `CLOSE`, `DISCARD ALL`)
//! as it sends it, with an [`Undo`]. The target side keeps the change when
//! the target confirms it and undoes it when the target skips or refuses
//! it, so the map never holds a statement the target does not have under
//! that name. Portals end with their transaction: a ReadyForQuery saying
//! the session is idle clears them.

use portcullis_core::StatementInfo;
use std::collections::HashMap;

/// Statement name to what it runs; portal name to the statement it was
/// bound from (`None`: bound from one the gateway does not know).
#[derive(Default)]
pub struct Prepared {
    pub statements: HashMap<String, StatementInfo>,
    pub portals: HashMap<String, Option<StatementInfo>>,
}

/// How to take back one change to [`Prepared`].
#[derive(Debug)]
pub enum Undo {
    Statement(String, Option<Box<StatementInfo>>),
    Portal(String, Option<Option<Box<StatementInfo>>>),
    AllStatements(HashMap<String, StatementInfo>),
    AllPortals(HashMap<String, Option<StatementInfo>>),
}

impl Prepared {
    /// Defines (`Some`) or removes (`None`) a prepared statement.
    pub fn set_statement(&mut self, name: &str, statement: Option<StatementInfo>) -> Undo {
        let previous = match statement {
            Some(statement) => self.statements.insert(name.to_string(), statement),
            None => self.statements.remove(name),
        };
        Undo::Statement(name.to_string(), previous.map(Box::new))
    }

    /// Binds (`Some`) or closes (`None`) a portal.
    pub fn set_portal(&mut self, name: &str, statement: Option<Option<StatementInfo>>) -> Undo {
        let previous = match statement {
            Some(statement) => self.portals.insert(name.to_string(), statement),
            None => self.portals.remove(name),
        };
        Undo::Portal(name.to_string(), previous.map(|p| p.map(Box::new)))
    }

    /// Removes a prepared statement, or all of them for `*`.
    pub fn deallocate(&mut self, name: &str) -> Undo {
        if name == "*" {
            Undo::AllStatements(std::mem::take(&mut self.statements))
        } else {
            self.set_statement(name, None)
        }
    }

    /// Closes a portal, or all of them for `*`.
    pub fn close(&mut self, name: &str) -> Undo {
        if name == "*" {
            Undo::AllPortals(std::mem::take(&mut self.portals))
        } else {
            self.set_portal(name, None)
        }
    }

    /// The changes a classified statement of a simple Query makes.
    pub fn apply(&mut self, statement: &StatementInfo) -> Vec<Undo> {
        let mut undo = Vec::new();
        if let Some(name) = &statement.prepares {
            undo.push(self.set_statement(name, Some(statement.clone())));
        }
        if let Some(name) = &statement.objects.declares {
            undo.push(self.set_portal(name, Some(Some(statement.clone()))));
        }
        if let Some(name) = &statement.objects.deallocates {
            undo.push(self.deallocate(name));
        }
        if let Some(name) = &statement.objects.closes {
            undo.push(self.close(name));
        }
        undo
    }

    /// Takes back changes, newest first.
    pub fn undo(&mut self, changes: impl IntoIterator<Item = Undo>) {
        let mut changes: Vec<Undo> = changes.into_iter().collect();
        while let Some(change) = changes.pop() {
            match change {
                Undo::Statement(name, Some(previous)) => {
                    self.statements.insert(name, *previous);
                }
                Undo::Statement(name, None) => {
                    self.statements.remove(&name);
                }
                Undo::Portal(name, Some(previous)) => {
                    self.portals.insert(name, previous.map(|p| *p));
                }
                Undo::Portal(name, None) => {
                    self.portals.remove(&name);
                }
                Undo::AllStatements(all) => self.statements = all,
                Undo::AllPortals(all) => self.portals = all,
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

    #[test]
    fn a_refused_definition_leaves_the_one_before() {
        let mut prepared = Prepared::default();
        prepared.set_statement("s", Some(statement("select national_id from customers")));
        // `PREPARE s AS select 1` while `s` exists: the target refuses it.
        let undo = prepared.apply(&statement("prepare s as select 1"));
        assert_eq!(prepared.statements["s"].text, "prepare s as select 1");
        prepared.undo(undo);
        assert_eq!(
            prepared.statements["s"].text,
            "select national_id from customers"
        );
    }

    #[test]
    fn deallocate_and_discard_remove_and_can_be_taken_back() {
        let mut prepared = Prepared::default();
        prepared.set_statement("a", Some(statement("select 1")));
        prepared.set_portal("c", Some(None));
        let undo = prepared.apply(&statement("deallocate a"));
        assert!(prepared.statements.is_empty());
        prepared.undo(undo);
        assert!(prepared.statements.contains_key("a"));
        let undo = prepared.apply(&statement("discard all"));
        assert!(prepared.statements.is_empty() && prepared.portals.is_empty());
        prepared.undo(undo);
        assert!(prepared.statements.contains_key("a") && prepared.portals.contains_key("c"));
    }

    #[test]
    fn declare_binds_the_cursor_to_its_query() {
        let mut prepared = Prepared::default();
        prepared.apply(&statement(
            "declare cur cursor for select email from customers",
        ));
        let bound = prepared.portals["cur"].as_ref().unwrap();
        assert_eq!(bound.lineage.relations[0].name, "customers");
        prepared.apply(&statement("close cur"));
        assert!(prepared.portals.is_empty());
    }
}
