//! What an SSH command line runs, as the policy sees it.
//!
//! The line is parsed with a bash grammar (`brush-parser`), and every simple
//! command in it becomes one [`Command`]: those of a pipeline or a list
//! (`;`, `&&`, `||`, `&`), of compound commands and functions, and those
//! inside command substitutions, which are also decided as a command named
//! [`SUBSTITUTION`]. Wrappers that only run another command (`sudo`, `env`,
//! `sh -c`, ...) are looked through.
//!
//! Architecture Invariant: fail closed. What this module cannot see through
//! (an unknown wrapper option, a substitution inside a parameter expansion,
//! a line that does not parse) is an error, and the line is refused.

use brush_parser::ast;
use brush_parser::word::WordPiece;
use portcullis_core::ssh::{Command, SUBSTITUTION};

/// Deeper than this, a line is refused: `sh -c "sh -c \"...\""`.
const MAX_DEPTH: usize = 8;
/// Longer lines are refused.
const MAX_LINE: usize = 16 * 1024;
/// Parentheses, braces and backquotes open at once, at most.
const MAX_NESTING: usize = 32;
/// Parentheses open at once, at most: the parser's time grows
/// exponentially with them (each could open `((` arithmetic), from 0.3 ms at
/// 12 to 75 ms at 20.
const MAX_PARENS: usize = 12;
/// `if`, `while`, `for`, `case`... in one line, at most: the parser's stack
/// and time grow with their nesting.
const MAX_COMPOUNDS: usize = 64;
/// Commands in one line, at most: each is decided and audited with the
/// line, so a line of thousands of `:` would write megabytes of audit log.
const MAX_COMMANDS: usize = 64;

/// The stack the parsing thread gets: the parser recurses with the nesting
/// of compound commands (`if` in `if` in `if`...), bounded by the counts
/// below, with room to spare for what they do not count. Only the pages
/// used are ever touched.
const PARSE_STACK: usize = 64 * 1024 * 1024;

/// The commands a command line runs, in order.
///
/// Parsed on a thread of its own with a stack for the deepest line allowed:
/// an overflow would abort the whole gateway.
pub fn parse(line: &str) -> Result<Vec<Command>, String> {
    if line.len() > MAX_LINE {
        return Err(format!("the command line is longer than {MAX_LINE} bytes"));
    }
    let owned = line.to_string();
    std::thread::Builder::new()
        .name("portcullis-parse".into())
        .stack_size(PARSE_STACK)
        .spawn(move || parse_here(&owned))
        .map_err(|e| format!("the command line cannot be inspected now: {e}"))?
        .join()
        .map_err(|_| "the command line cannot be inspected".to_string())?
}

fn parse_here(line: &str) -> Result<Vec<Command>, String> {
    // Carriage returns, vertical tabs, form feeds...: bash reads them as
    // part of a word, other readers of the line (env -S, a terminal) do not.
    if line
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err("the command line holds control characters other than tab and newline".into());
    }
    // The parser recurses with the nesting: a deep line is refused before it
    // can exhaust the stack.
    if line.len() > MAX_LINE {
        return Err(format!("the command line is longer than {MAX_LINE} bytes"));
    }
    let mut depth = 0usize;
    let mut parens = 0usize;
    for c in line.chars() {
        match c {
            '(' | '{' | '`' => depth += 1,
            ')' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        match c {
            '(' => parens += 1,
            ')' => parens = parens.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_NESTING || parens > MAX_PARENS {
            return Err("the command line nests too deep to inspect".into());
        }
    }
    // Compound commands, counted rather than nested, as a keyword's `fi`
    // or `done` cannot be told from an argument without parsing.
    // A backslash-newline joins the words it splits: `i\<newline>f`.
    let compounds = line
        .replace("\\\n", "")
        .split(|c: char| c.is_whitespace() || ";&|()<>".contains(c))
        .filter(|word| {
            matches!(
                *word,
                "if" | "while" | "until" | "for" | "case" | "select" | "function"
            )
        })
        .count();
    if compounds > MAX_COMPOUNDS {
        return Err(format!(
            "the command line has more than {MAX_COMPOUNDS} compound commands: too many to inspect"
        ));
    }
    let mut walker = Walker {
        line: line.to_string(),
        out: Vec::new(),
        // As bash runs a command line: extended globs are off.
        options: brush_parser::ParserOptions {
            enable_extended_globbing: false,
            ..Default::default()
        },
        inherited: Vec::new(),
    };
    walker.source(line, &[], 0)?;
    if walker.out.is_empty() {
        return Err("the command line runs no command".into());
    }
    if walker.out.len() > MAX_COMMANDS {
        return Err(format!(
            "the command line runs more than {MAX_COMMANDS} commands: too many to decide one by one"
        ));
    }
    Ok(walker.out)
}

struct Walker {
    line: String,
    out: Vec<Command>,
    options: brush_parser::ParserOptions,
    /// Files written by the redirections of the compound commands around
    /// the current one (`{ ...; } > file`).
    inherited: Vec<String>,
}

/// One word, as far as it is known before it runs.
struct Value {
    text: String,
    dynamic: bool,
}

impl Walker {
    fn source(&mut self, source: &str, wrappers: &[String], depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("the command line nests shells too deep to inspect".into());
        }
        // Each shell's line as that shell reads it: `sh -c`'s, unquoted,
        // may hold what the outer line only spells with escapes.
        if let Some(reason) = unreadable(source) {
            return Err(reason.into());
        }
        let tokens = brush_parser::uncached_tokenize_str(source, &self.options.tokenizer_options())
            .map_err(|e| format!("the command line does not parse: {e}"))?;
        read_as_written(source, &tokens)?;
        let program = brush_parser::parse_tokens(&tokens, &self.options)
            .map_err(|e| format!("the command line does not parse: {e}"))?;
        for list in &program.complete_commands {
            self.compound_list(list, wrappers, depth)?;
        }
        Ok(())
    }

    fn compound_list(
        &mut self,
        list: &ast::CompoundList,
        wrappers: &[String],
        depth: usize,
    ) -> Result<(), String> {
        for ast::CompoundListItem(and_or, _) in &list.0 {
            self.pipeline(&and_or.first, wrappers, depth)?;
            for next in &and_or.additional {
                let (ast::AndOr::And(p) | ast::AndOr::Or(p)) = next;
                self.pipeline(p, wrappers, depth)?;
            }
        }
        Ok(())
    }

    fn pipeline(
        &mut self,
        pipeline: &ast::Pipeline,
        wrappers: &[String],
        depth: usize,
    ) -> Result<(), String> {
        for command in &pipeline.seq {
            self.command(command, wrappers, depth)?;
        }
        Ok(())
    }

    fn command(
        &mut self,
        command: &ast::Command,
        wrappers: &[String],
        depth: usize,
    ) -> Result<(), String> {
        match command {
            ast::Command::Simple(simple) => self.simple(simple, wrappers, depth),
            ast::Command::Compound(compound, redirects) => {
                self.with_redirects(redirects.as_ref(), wrappers, depth, |walker| {
                    walker.compound(compound, wrappers, depth)
                })
            }
            ast::Command::Function(function) => {
                // dash has no `function` keyword: under `sh -c` it runs
                // `function NAME` as a command, expanding NAME (found in
                // attack: `function $(cmd)`). A name is plain or refused.
                let name = &function.fname.value;
                let plain = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !plain {
                    return Err(format!(
                        "a function named `{name}` is not inspected: name it with letters, digits and `_`"
                    ));
                }
                let ast::FunctionBody(body, redirects) = &function.body;
                self.with_redirects(redirects.as_ref(), wrappers, depth, |walker| {
                    walker.compound(body, wrappers, depth)
                })
            }
            // `[[ ]]` evaluates the values of variables as arithmetic, which
            // can run commands (`a[$(...)]`).
            ast::Command::ExtendedTest(..) => {
                Err("`[[ ]]` is not inspected: use `[ ]` or `test`".into())
            }
        }
    }

    /// Walks a compound command with the files its redirections write
    /// added to every command inside it.
    fn with_redirects(
        &mut self,
        redirects: Option<&ast::RedirectList>,
        wrappers: &[String],
        depth: usize,
        walk: impl FnOnce(&mut Walker) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut writes = Vec::new();
        for redirect in redirects.iter().flat_map(|r| r.0.iter()) {
            self.redirect(redirect, &mut writes, wrappers, depth)?;
        }
        self.with_inherited(writes, walk)
    }

    /// Walks with `writes` added to the files every command written inside
    /// is taken to write.
    fn with_inherited(
        &mut self,
        writes: Vec<String>,
        walk: impl FnOnce(&mut Walker) -> Result<(), String>,
    ) -> Result<(), String> {
        let before = self.inherited.len();
        self.inherited.extend(writes);
        let walked = walk(self);
        self.inherited.truncate(before);
        walked
    }

    fn compound(
        &mut self,
        compound: &ast::CompoundCommand,
        wrappers: &[String],
        depth: usize,
    ) -> Result<(), String> {
        use ast::CompoundCommand as C;
        match compound {
            // Arithmetic evaluates the values of variables, which can run
            // commands; and `((...) )` is read differently by bash.
            C::Arithmetic(_) | C::ArithmeticForClause(_) => {
                Err("arithmetic commands (`(( ))`) are not inspected".into())
            }
            C::BraceGroup(b) => self.compound_list(&b.list, wrappers, depth),
            C::Subshell(s) => self.compound_list(&s.list, wrappers, depth),
            C::ForClause(f) => {
                assignable(&f.variable_name)?;
                for word in f.values.iter().flatten() {
                    self.word(&word.value, wrappers, depth)?;
                }
                self.compound_list(&f.body.list, wrappers, depth)
            }
            C::CaseClause(c) => {
                self.word(&c.value.value, wrappers, depth)?;
                for item in &c.cases {
                    for pattern in &item.patterns {
                        self.word(&pattern.value, wrappers, depth)?;
                    }
                    if let Some(list) = &item.cmd {
                        self.compound_list(list, wrappers, depth)?;
                    }
                }
                Ok(())
            }
            C::IfClause(i) => {
                self.compound_list(&i.condition, wrappers, depth)?;
                self.compound_list(&i.then, wrappers, depth)?;
                for e in i.elses.iter().flatten() {
                    if let Some(condition) = &e.condition {
                        self.compound_list(condition, wrappers, depth)?;
                    }
                    self.compound_list(&e.body, wrappers, depth)?;
                }
                Ok(())
            }
            C::WhileClause(w) | C::UntilClause(w) => {
                self.compound_list(&w.0, wrappers, depth)?;
                self.compound_list(&w.1.list, wrappers, depth)
            }
            // bash expands a coprocess's NAME (substitutions included) and
            // reads `coproc NAME` then a newline as running NAME, where the
            // grammar here reads a coprocess named NAME.
            C::Coprocess(_) => Err("`coproc` is not inspected".into()),
        }
    }

    fn simple(
        &mut self,
        simple: &ast::SimpleCommand,
        wrappers: &[String],
        depth: usize,
    ) -> Result<(), String> {
        let mut argv: Vec<Value> = Vec::new();
        let mut redirects = Vec::new();
        let items = simple
            .prefix
            .iter()
            .flat_map(|p| p.0.iter())
            .map(Some)
            .chain(std::iter::once(None))
            .chain(simple.suffix.iter().flat_map(|s| s.0.iter()).map(Some));
        for item in items {
            match item {
                // The command name sits between the prefix and the suffix.
                None => {
                    if let Some(name) = &simple.word_or_name {
                        argv.push(self.word(&name.value, wrappers, depth)?);
                    }
                }
                Some(ast::CommandPrefixOrSuffixItem::Word(word)) => {
                    argv.push(self.word(&word.value, wrappers, depth)?);
                }
                Some(ast::CommandPrefixOrSuffixItem::AssignmentWord(assignment, word)) => {
                    let value = self.word(&word.value, wrappers, depth)?;
                    // After the command name, `A=b` is an argument
                    // (`eval true A=';rm -rf /'`); before it, an assignment.
                    if !argv.is_empty() {
                        argv.push(value);
                        continue;
                    }
                    let name = match &assignment.name {
                        ast::AssignmentName::VariableName(name) => name.as_str(),
                        ast::AssignmentName::ArrayElementName(name, _) => {
                            return Err(format!(
                                "setting `{name}[...]` for a command is not inspected"
                            ))
                        }
                    };
                    if assignment.append {
                        return Err(format!(
                            "appending to `{name}` for a command is not inspected"
                        ));
                    }
                    // The word is the whole `NAME=value`.
                    let assigned = Value {
                        text: value
                            .text
                            .split_once('=')
                            .map_or("", |(_, v)| v)
                            .to_string(),
                        dynamic: value.dynamic,
                    };
                    safe_assignment(name, &assigned)?;
                }
                Some(ast::CommandPrefixOrSuffixItem::IoRedirect(redirect)) => {
                    self.redirect(redirect, &mut redirects, wrappers, depth)?;
                }
                Some(ast::CommandPrefixOrSuffixItem::ProcessSubstitution(_, subshell)) => {
                    self.substitution("<( )", wrappers)?;
                    let inner = with(wrappers, SUBSTITUTION);
                    self.compound_list(&subshell.list, &inner, depth + 1)?;
                    argv.push(Value {
                        text: "<( )".into(),
                        dynamic: true,
                    });
                }
            }
        }
        self.argv(argv, redirects, wrappers.to_vec(), depth)
    }

    /// Looks through wrappers, then records the command.
    fn argv(
        &mut self,
        mut argv: Vec<Value>,
        mut redirects: Vec<String>,
        mut wrappers: Vec<String>,
        depth: usize,
    ) -> Result<(), String> {
        let mut forced_dynamic = false;
        while let Some(first) = argv.first() {
            if first.dynamic {
                break;
            }
            // A wrapper is looked through by its bare name or in a system
            // directory: `/tmp/sudo` is a program of its own.
            if !is_system_program(&first.text) {
                break;
            }
            let name = basename(&first.text).to_string();
            match unwrap(&name, &argv)? {
                Unwrapped::Not => break,
                Unwrapped::Runs(skip) => {
                    // `xargs` adds arguments read from its input.
                    forced_dynamic |= name == "xargs";
                    // On a terminal, `nohup` writes what the command
                    // prints to `nohup.out` (found in attack).
                    if name == "nohup" {
                        redirects.push("nohup.out".into());
                    }
                    wrappers.push(name);
                    argv.drain(..skip);
                    if argv.is_empty() {
                        return Ok(());
                    }
                }
                Unwrapped::Source(_, _) if forced_dynamic => {
                    // `xargs sh -c '...{}...'`: the line is completed by input.
                    return Err(
                        "a shell or eval under xargs runs input as code: not inspected".into(),
                    );
                }
                Unwrapped::Source(label, source) => {
                    wrappers.push(label);
                    return self.source_redirected(&source, &wrappers, depth + 1, redirects);
                }
            }
        }
        if let Some(first) = argv.first() {
            // bash reads `time -- cmd` as timing `cmd`, and `sh -c 'time
            // -q cmd'` runs the program `time`; the grammar here makes `--`
            // or `-q` the command's name.
            if first.text.starts_with('-') {
                return Err(format!(
                    "a command named `{}` (as after `time`) is not inspected: leave out the option",
                    first.text
                ));
            }
            if let Some(code) = evaluating_builtin(&first.text, &argv)? {
                wrappers.push("trap".into());
                return self.source_redirected(&code, &wrappers, depth + 1, redirects);
            }
        }
        let dynamic = forced_dynamic || argv.iter().any(|v| v.dynamic);
        let program_dynamic = argv.first().is_some_and(|v| v.dynamic);
        let mut words = argv.into_iter().map(|v| v.text);
        let program = words.next().unwrap_or_default();
        let args: Vec<String> = words.collect();
        let mut text = program.clone();
        for arg in &args {
            text.push(' ');
            text.push_str(arg);
        }
        redirects.extend(self.inherited.iter().cloned());
        self.out.push(Command {
            // A name known only when it runs stays as written.
            name: if program_dynamic {
                program.clone()
            } else {
                basename(&program).to_string()
            },
            program,
            args,
            text,
            line: self.line.clone(),
            wrappers,
            dynamic,
            redirects,
        });
        Ok(())
    }

    /// Walks the line a wrapper runs (`eval`, `sh -c`, `trap`) with the
    /// files the wrapper's own redirections write added to every command
    /// in it (found in attack: `eval echo x > file` wrote the file with
    /// no redirection decided). A line that runs no command would write
    /// them unseen: refused.
    fn source_redirected(
        &mut self,
        source: &str,
        wrappers: &[String],
        depth: usize,
        redirects: Vec<String>,
    ) -> Result<(), String> {
        if redirects.is_empty() {
            return self.source(source, wrappers, depth);
        }
        let commands = self.out.len();
        self.with_inherited(redirects, |walker| walker.source(source, wrappers, depth))?;
        if self.out.len() == commands {
            return Err(format!(
                "`{}` writes a file through its redirection and runs no command: not inspected",
                wrappers.last().map_or("", String::as_str)
            ));
        }
        Ok(())
    }

    fn redirect(
        &mut self,
        redirect: &ast::IoRedirect,
        writes: &mut Vec<String>,
        wrappers: &[String],
        depth: usize,
    ) -> Result<(), String> {
        use ast::{IoFileRedirectKind as K, IoFileRedirectTarget as T, IoRedirect as R};
        match redirect {
            R::File(_, kind, target) => match target {
                T::Filename(word) => {
                    let value = self.word(&word.value, wrappers, depth)?;
                    // bash opens `/dev/tcp/HOST/PORT` as a connection: a
                    // `cat` reading it is a tunnel.
                    if value.dynamic && !matches!(kind, K::Write | K::Append | K::Clobber) {
                        return Err(
                            "a redirection from a file named only when it runs is not inspected"
                                .into(),
                        );
                    }
                    if ["/dev/tcp/", "/dev/udp/"]
                        .iter()
                        .any(|p| value.text.starts_with(p))
                    {
                        return Err(
                            "network connections through /dev/tcp and /dev/udp are refused".into(),
                        );
                    }
                    if matches!(kind, K::Write | K::Append | K::Clobber | K::ReadAndWrite) {
                        writes.push(value.text);
                    }
                }
                T::ProcessSubstitution(_, subshell) => {
                    self.substitution("<( )", wrappers)?;
                    let inner = with(wrappers, SUBSTITUTION);
                    self.compound_list(&subshell.list, &inner, depth + 1)?;
                }
                T::Duplicate(word) => {
                    let value = self.word(&word.value, wrappers, depth)?;
                    if value.dynamic {
                        return Err(
                            "a redirection to a descriptor or file named only when it runs is not inspected"
                                .into(),
                        );
                    }
                    // `>&file` writes a file; `>&2` and `>&-` do not.
                    let fd = value.text == "-" || value.text.chars().all(|c| c.is_ascii_digit());
                    if !fd && matches!(kind, K::DuplicateOutput | K::Write | K::Append | K::Clobber)
                    {
                        writes.push(value.text);
                    }
                }
                T::Fd(_) => {}
            },
            R::HereDocument(_, doc) => {
                // Inside `$( )`, bash ends the document, and the
                // substitution, at a line `EOF)`; the parser reads on to a
                // later `EOF`.
                if wrappers.iter().any(|w| w == SUBSTITUTION) {
                    return Err(
                        "a here-document inside `$( )`, `<( )` or backquotes is not inspected"
                            .into(),
                    );
                }
                // bash and the parser end such a document at different lines.
                if doc.here_end.value.contains('\\') {
                    return Err(
                        "a here-document delimiter with a backslash is not inspected".into(),
                    );
                }
                if doc.requires_expansion
                    && ["${", "$((", "$["]
                        .iter()
                        .any(|e| doc.doc.value.contains(e))
                {
                    return Err("a here-document that expands `${ }` or arithmetic is not inspected: quote its delimiter".into());
                }
                if doc.requires_expansion && has_substitution(&doc.doc.value) {
                    return Err("a command substitution inside a here-document is not inspected: run it on its own".into());
                }
            }
            R::HereString(_, word) => {
                self.word(&word.value, wrappers, depth)?;
            }
            R::OutputAndError(word, _) => {
                let value = self.word(&word.value, wrappers, depth)?;
                writes.push(value.text);
            }
        }
        Ok(())
    }

    /// The value of a word, deciding the substitutions inside it on the way.
    fn word(&mut self, raw: &str, wrappers: &[String], depth: usize) -> Result<Value, String> {
        let pieces = brush_parser::word::parse(raw, &self.options)
            .map_err(|e| format!("the command line does not parse: {e}"))?;
        let mut value = Value {
            text: String::new(),
            dynamic: false,
        };
        if !pieces_as_written(raw, &pieces, 0, raw.len()) {
            let shown: String = raw.chars().take(40).collect();
            return Err(format!(
                "the word {shown:?} is read differently by bash and the gateway: not inspected"
            ));
        }
        self.pieces(raw, &pieces, false, &mut value, wrappers, depth)?;
        // Brace expansion spans quoted pieces (`{"5",rm}`): judged on the
        // whole word, quotes and all.
        if raw.contains('{') && raw.contains('}') && (raw.contains(',') || raw.contains("..")) {
            value.dynamic = true;
        }
        if value.dynamic {
            // Known only when it runs: kept as written.
            value.text = raw.to_string();
        }
        Ok(value)
    }

    fn pieces(
        &mut self,
        raw: &str,
        pieces: &[brush_parser::word::WordPieceWithSource],
        quoted: bool,
        value: &mut Value,
        wrappers: &[String],
        depth: usize,
    ) -> Result<(), String> {
        for piece in pieces {
            let source = raw.get(piece.start_index..piece.end_index).unwrap_or(raw);
            match &piece.piece {
                WordPiece::Text(text) => {
                    // Brace expansion comes first: a `$` it puts beside a
                    // `{` or `[` is then an expansion the parser read as
                    // text (found in attack: `{$,x}{y@P}` is `${y@P}`).
                    if !quoted && text.contains('$') && expands(raw) {
                        return Err(format!(
                            "a `$` in a word with brace expansion (`{raw}`) may become an expansion: not inspected"
                        ));
                    }
                    if !quoted && expands(text) {
                        value.dynamic = true;
                    }
                    value.text.push_str(text);
                }
                WordPiece::SingleQuotedText(text) => value.text.push_str(text),
                WordPiece::EscapeSequence(text) => {
                    value.text.push_str(text.strip_prefix('\\').unwrap_or(text));
                }
                WordPiece::DoubleQuotedSequence(inner)
                | WordPiece::GettextDoubleQuotedSequence(inner) => {
                    self.pieces(raw, inner, true, value, wrappers, depth)?;
                }
                // Inside backquotes bash removes backslashes before parsing.
                // Within double quotes it removes the one before `"` too,
                // which the parser keeps.
                WordPiece::BackquotedCommandSubstitution(inner) if inner.contains('\\') => {
                    return Err("escapes inside backquotes are not inspected: use $( )".into());
                }
                // bash ends a substitution where its comment lets it, the
                // tokenizer at the first `)` (found in attack: `$( #)
                // <<EOF` hid the lines after it).
                WordPiece::CommandSubstitution(inner)
                | WordPiece::BackquotedCommandSubstitution(inner)
                    if holds_comment(inner) =>
                {
                    return Err(format!(
                        "a comment inside `{source}` is not inspected: leave it out"
                    ));
                }
                WordPiece::CommandSubstitution(inner)
                | WordPiece::BackquotedCommandSubstitution(inner) => {
                    self.substitution(source, wrappers)?;
                    let nested = with(wrappers, SUBSTITUTION);
                    self.source(inner, &nested, depth + 1)?;
                    value.dynamic = true;
                }
                WordPiece::ParameterExpansion(_) | WordPiece::ArithmeticExpression(_) => {
                    // `${PATH:=/tmp/x}` assigns as it expands.
                    if let Some(name) = assigned_in_expansion(source) {
                        assignable(name)?;
                    }
                    if has_substitution(source) {
                        return Err(format!(
                            "a command substitution inside `{source}` is not inspected: run it on its own"
                        ));
                    }
                    // Inside `${ }` the word is text to the parser, and
                    // `$((` there may be arithmetic on a variable's value
                    // (`${z:-$((y))}` runs `a[$(...)]` in y) or, unclosed
                    // as `))`, a command substitution (`${z:-$((cmd) )}`).
                    if source.starts_with("${") && source.contains("$((") {
                        return Err(format!(
                            "arithmetic inside `{source}` is not inspected: compute it on its own"
                        ));
                    }
                    if evaluates_values(source) {
                        return Err(format!(
                            "`{source}` evaluates a variable's value as code or arithmetic, which is not inspected"
                        ));
                    }
                    value.dynamic = true;
                }
                WordPiece::AnsiCQuotedText(_) | WordPiece::TildeExpansion(_) => {
                    value.dynamic = true;
                }
            }
        }
        Ok(())
    }

    /// A command substitution is decided as a command of its own, named
    /// [`SUBSTITUTION`]: a policy allows substitution only by naming it.
    fn substitution(&mut self, source: &str, wrappers: &[String]) -> Result<(), String> {
        self.out.push(Command {
            program: SUBSTITUTION.into(),
            name: SUBSTITUTION.into(),
            args: Vec::new(),
            text: source.to_string(),
            line: self.line.clone(),
            wrappers: wrappers.to_vec(),
            dynamic: true,
            redirects: Vec::new(),
        });
        Ok(())
    }
}

/// Checks that the parser's tokens are the line as written: each token's
/// text is what stands where it says it comes from, no two overlap, and
/// only blanks, line continuations and comments lie between them.
///
/// Where the parser's tokenizer reads a construct otherwise than bash, it
/// drops or moves text: a comment inside `$(( ))` (bash has none there),
/// the inside of a `$((` after `<<EOF` moved to after the document. Each
/// such difference found so far showed here, so a line whose tokens are not
/// its own text is refused rather than decided on what the parser made of
/// it.
fn read_as_written(source: &str, tokens: &[brush_parser::Token]) -> Result<(), String> {
    use brush_parser::Token;
    // The tokenizer counts characters; slices take bytes.
    let offsets: Vec<usize> = source
        .char_indices()
        .map(|(at, _)| at)
        .chain(std::iter::once(source.len()))
        .collect();
    let text = |start: usize, end: usize| -> Option<&str> {
        source.get(*offsets.get(start)?..*offsets.get(end)?)
    };
    let differs = |written: &str| {
        let shown: String = written.chars().take(40).collect();
        format!("the command line is read differently by bash and the gateway near {shown:?}: not inspected")
    };
    let mut spans = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.iter().enumerate() {
        let location = token.location();
        let (start, end) = (location.start.index, location.end.index);
        let written = text(start, end).ok_or_else(|| differs(""))?;
        let read = token.to_str();
        let is_tag = |t: &Token| matches!(t, Token::Word(_, l) if l.start.index == end && l.end.index == end);
        let same = if start == end {
            // A here-document's end tag: checked with the body before it.
            i > 0 && is_tag(token) && tokens[i - 1].location().end.index == end
        } else if let Some(Token::Word(tag, _)) = tokens.get(i + 1).filter(|t| is_tag(t)) {
            // A here-document's body, written up to and with its end tag's
            // line, after `<<` or `<<-` and the delimiter as written.
            let (Some(Token::Operator(op, _)), Some(Token::Word(delimiter, _))) = (
                i.checked_sub(2).map(|k| &tokens[k]),
                i.checked_sub(1).map(|k| &tokens[k]),
            ) else {
                return Err(differs(written));
            };
            let tabs = match op.as_str() {
                "<<" => false,
                "<<-" => true,
                _ => return Err(differs(written)),
            };
            delimiter_as_bash_reads(delimiter).as_deref() == Some(tag.as_str())
                && here_body(written, read, tag, tabs)
        } else {
            // A token after a here-document's tag is placed from the blank
            // before it.
            let written = written.trim_start_matches([' ', '\t']);
            if matches!(token, Token::Operator(op, _) if op == "\n") {
                // A line's end, with the comment before it.
                written == "\n"
                    || (written.starts_with('#')
                        && written.ends_with('\n')
                        && written.matches('\n').count() == 1)
            } else {
                // Both shells drop a backslash-newline outside single quotes.
                written == read
                    || (!written.contains('\'')
                        && written.contains("\\\n")
                        && joined(written) == read)
            }
        };
        if !same {
            return Err(differs(written));
        }
        if start < end {
            spans.push((start, end));
        }
    }
    let blank = |text: &str| joined(text).chars().all(|c| c == ' ' || c == '\t');
    spans.sort_unstable();
    let mut at = 0;
    for (start, end) in spans {
        if start < at {
            return Err(differs(text(start, end).unwrap_or_default()));
        }
        let gap = text(at, start).unwrap_or_default();
        if !blank(gap) {
            return Err(differs(gap));
        }
        at = end;
    }
    // What follows the last token: blanks, then perhaps a comment.
    // A comment runs to the line's end: a backslash there continues nothing.
    let rest = text(at, offsets.len() - 1).unwrap_or_default();
    let (before_comment, comment) = rest.split_once('#').unwrap_or((rest, ""));
    if !blank(before_comment) || comment.contains('\n') {
        return Err(differs(rest));
    }
    Ok(())
}

/// Whether a word's pieces are the word as written, end to end: each
/// piece's text is what stands where it says it comes from, and what a
/// substitution runs is exactly what its parentheses or backquotes hold.
/// The word parser, like the tokenizer, may read a construct otherwise
/// than bash; what it would drop or move is refused.
fn pieces_as_written(
    raw: &str,
    pieces: &[brush_parser::word::WordPieceWithSource],
    from: usize,
    to: usize,
) -> bool {
    let mut at = from;
    for piece in pieces {
        let (start, end) = (piece.start_index, piece.end_index);
        let Some(source) = raw.get(start..end).filter(|_| start == at) else {
            return false;
        };
        at = end;
        let enclosed = |open: &str, inner: &str, close: &str| {
            source
                .strip_prefix(open)
                .and_then(|s| s.strip_suffix(close))
                .is_some_and(|s| s == inner)
        };
        let same = match &piece.piece {
            // A `$` the word parser left as text before `{`, `(` or `[` is
            // an expansion it could not read, which bash runs (found in
            // attack: `${y:y:1:1}` evaluates y's value as arithmetic).
            WordPiece::Text(text) => {
                source == text
                    && !source.match_indices('$').any(|(i, _)| {
                        raw.get(start + i + 1..)
                            .is_some_and(|after| after.starts_with(['{', '(', '[', '\\']))
                    })
            }
            WordPiece::EscapeSequence(text) => source == text,
            WordPiece::SingleQuotedText(text) => enclosed("'", text, "'"),
            WordPiece::CommandSubstitution(inner) => enclosed("$(", inner, ")"),
            WordPiece::BackquotedCommandSubstitution(inner) => enclosed("`", inner, "`"),
            WordPiece::ArithmeticExpression(expr) => enclosed("$((", &expr.value, "))"),
            WordPiece::DoubleQuotedSequence(inner) => {
                source.len() >= 2
                    && source.starts_with('"')
                    && source.ends_with('"')
                    && pieces_as_written(raw, inner, start + 1, end - 1)
            }
            WordPiece::GettextDoubleQuotedSequence(inner) => {
                source.len() >= 3
                    && source.starts_with("$\"")
                    && source.ends_with('"')
                    && pieces_as_written(raw, inner, start + 2, end - 1)
            }
            WordPiece::ParameterExpansion(_) => source.starts_with('$'),
            WordPiece::AnsiCQuotedText(_) => source.starts_with("$'"),
            WordPiece::TildeExpansion(_) => source.starts_with('~'),
        };
        if !same {
            return false;
        }
    }
    at == to
}

/// A here-document's delimiter as bash reads it: its quotes removed, a
/// quote of one kind inside the other kept (`"'"x` is `'x`). `None` for
/// what takes more than quotes to read (escapes; `$` and backquotes are
/// refused before).
fn delimiter_as_bash_reads(word: &str) -> Option<String> {
    let mut out = String::with_capacity(word.len());
    let mut quote = None;
    for c in word.chars() {
        match (quote, c) {
            (_, '\\') => return None,
            (None, '\'' | '"') => quote = Some(c),
            (Some(open), _) if c == open => quote = None,
            _ => out.push(c),
        }
    }
    quote.is_none().then_some(out)
}

/// Whether shell code holds a comment: a `#` outside quotes at a word's
/// start (after a blank, an operator, or at the start). Conservative: a
/// `#` that only looks so (`$(echo a#b)` is none) may count.
fn holds_comment(code: &str) -> bool {
    let mut previous = None;
    let mut chars = code.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '\'' => {
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                }
            }
            '"' => {
                while let Some(q) = chars.next() {
                    match q {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '#' if previous.is_none_or(|p: char| p.is_whitespace() || ";&|()<>".contains(p)) => {
                return true;
            }
            _ => {}
        }
        previous = Some(c);
    }
    false
}

/// `text` without its line continuations (a backslash-newline whose
/// backslash is not itself escaped).
fn joined(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\n') => {}
            Some(next) => {
                out.push(c);
                out.push(next);
            }
            None => out.push(c),
        }
    }
    out
}

/// Whether a here-document's body as written (its lines, then its end
/// tag's line) is the body the parser read and ends at the line bash ends
/// it: the first line that is the tag, after `<<-` without its leading tabs.
fn here_body(written: &str, read: &str, tag: &str, tabs: bool) -> bool {
    let mut lines: Vec<&str> = written.split_inclusive('\n').collect();
    let strip = |line: &str| -> String {
        if tabs {
            line.trim_start_matches('\t').to_string()
        } else {
            line.to_string()
        }
    };
    let Some(last) = lines.pop() else {
        return false;
    };
    if strip(last).trim_end_matches('\n') != tag {
        return false;
    }
    // No line before the last one ends the document.
    if lines
        .iter()
        .any(|line| strip(line).trim_end_matches('\n') == tag)
    {
        return false;
    }
    lines.iter().map(|line| strip(line)).collect::<String>() == read
}

/// What the parser and bash read differently, found in the raw line:
/// `((` outside `$((` (the parser's arithmetic mode hides here-documents
/// and what follows them), `$[` (old arithmetic), and `{a[i]}>` (a named
/// descriptor whose subscript bash evaluates).
///
/// And what bash and a POSIX shell read differently. The target runs the
/// line with the user's login shell, and `sh -c` with `/bin/sh`, which is
/// dash on Debian: the line is parsed as bash, so a construct that dash
/// splits elsewhere could hide a command from the policy
/// (`echo $'\' ; rm -rf ~ ; echo ' #'` is one `echo` to bash and three
/// commands to dash).
fn unreadable(line: &str) -> Option<&'static str> {
    // bash reads `$`, a backslash-newline and `(` as `$(`; the tokenizer
    // does not (found in attack: the substitution became text).
    if line.contains("$\\\n") {
        return Some("a backslash-newline after `$` is read differently by bash and the gateway");
    }
    // Both shells drop a backslash-newline before they read on: `$\` and a
    // newline before `'` is `$'`.
    let joined = line.replace("\\\n", "");
    // bash joins them inside a here-document's body too, before it looks
    // for the delimiter; the parser does not, so the two end it apart.
    if joined.len() != line.len() && line.contains("<<") {
        return Some("a backslash-newline in a line with a here-document is read differently by bash and the gateway");
    }
    let line = joined.as_str();
    for (construct, reason) in [
        ("$'", "`$'...'` quoting is read differently by sh and bash"),
        (
            "$\"",
            "`$\"...\"` quoting is read differently by sh and bash",
        ),
        (
            "&>",
            "`&>` redirects in bash but runs in the background in sh: write `> file 2>&1`",
        ),
        (
            "|&",
            "`|&` is read differently by sh and bash: write `2>&1 |`",
        ),
        (
            "<<<",
            "here-strings (`<<<`) are read differently by sh and bash",
        ),
    ] {
        if line.contains(construct) {
            return Some(reason);
        }
    }
    // Quotes and escapes inside `${...}` (`"${u:-'}'"`) are read one way
    // by bash and another by dash, within double quotes above all; so is
    // where a `${` nested in another ends.
    for (at, _) in line.match_indices("${") {
        // bash 5.3 runs `${ list; }` and `${| list; }` as commands, which
        // the parser reads as a parameter: a parameter starts with a name,
        // a digit or a special parameter.
        let starts_parameter = line[at + 2..].chars().next().is_some_and(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '#' | '!' | '@' | '*' | '?' | '$' | '-')
        });
        if !starts_parameter {
            return Some("`${` not followed by a parameter's name is a command in bash 5.3 (`${ cmd; }`): not inspected");
        }
        let mut depth = 1usize;
        let mut inside = line[at + 2..].chars().peekable();
        while depth > 0 {
            match inside.next() {
                None => return Some("an unterminated `${` is not inspected"),
                Some('{') => depth += 1,
                Some('}') => depth -= 1,
                Some('$') if inside.peek() == Some(&'{') => {
                    return Some("a `${ }` inside another is read differently by sh and bash")
                }
                Some('\'' | '"' | '\\' | '`') => {
                    return Some(
                        "quotes and escapes inside `${ }` are read differently by sh and bash",
                    )
                }
                // The parser takes `<<` there for a here-document, which
                // hides the lines after it; bash takes it for text.
                Some('<' | '>') => {
                    return Some(
                        "`<` and `>` inside `${ }` are read differently by bash and the gateway",
                    )
                }
                Some(_) => {}
            }
        }
    }
    // The parser moves what follows `<<` on its line to after the
    // document, and takes quotes in `<<$((...))` for a quoted delimiter
    // (found in attack: `cat <<EOF $((cmd) )` ran cmd).
    for text in line.lines() {
        if let Some((_, after)) = text.split_once("<<") {
            if after.contains(['$', '`']) {
                return Some("`$` or a backquote after `<<` on its line is read differently by bash and the gateway");
            }
        }
    }
    // Inside `$(( ))`, `#` is a comment to the parser, not to bash; quotes
    // are quotes to bash and the parser, and plain characters to dash,
    // which ends the arithmetic at the first `))` they hold (found in
    // attack: `sh -c 'true || echo $(( " )) ; . /proc/self/fd/0 ; : " ))
    // #"'` ran stdin). Arithmetic may hold numbers, names, operators,
    // blanks and balanced parentheses only, which every shell reads alike.
    for (at, _) in line.match_indices("$((") {
        let rest = &line[at + 3..];
        let Some(body) = arithmetic_body(rest) else {
            // `$((cmd) )`: bash reads a substitution of a subshell; dash
            // reads arithmetic up to the next `))`, if any.
            if rest.contains("))") {
                return Some("`$((` closed by `) )` and then by a later `))` is read differently by sh and bash");
            }
            continue;
        };
        if !body.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || c.is_ascii_whitespace()
                || "_$+-*/%<>=!&|^~?:,(){}".contains(c)
        }) {
            return Some("`$(( ))` may hold only numbers, names, operators and parentheses: quotes, escapes and comments there are read differently by sh, bash and the gateway");
        }
    }
    let bytes = line.as_bytes();
    for (at, _) in line.match_indices("((") {
        if at == 0 || bytes[at - 1] != b'$' {
            return Some("arithmetic commands (`(( ))`) are not inspected");
        }
    }
    if line.contains("$[") {
        return Some("`$[ ]` arithmetic is not inspected");
    }
    for (at, _) in line.match_indices('{') {
        let rest = &line[at + 1..];
        let Some(close) = rest.find('}') else {
            continue;
        };
        let inside = &rest[..close];
        let after = rest[close + 1..].chars().next();
        if inside.contains('[') && matches!(after, Some('<' | '>')) {
            return Some("a named descriptor with a subscript (`{a[i]}>`) is not inspected");
        }
        // `{NAME}>file` assigns the new descriptor's number to NAME, which
        // the parser reads as a word: `echo {PATH}</dev/null` sets PATH.
        if !inside.is_empty()
            && inside
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && matches!(after, Some('<' | '>'))
        {
            return Some("named descriptors (`{fd}>file`) assign a variable: not inspected");
        }
    }
    None
}

/// Variables a command may be given in front of it (`LANG=C ls`): others
/// (`PATH`, `LD_PRELOAD`, `BASH_ENV`, `BASH_FUNC_*`, `PS4`, `BASHOPTS`)
/// change what runs.
fn safe_variable(name: &str) -> bool {
    name == "LANG" || name == "TZ" || name.starts_with("LC_")
}

/// Whether a variable may be assigned by the line itself (a loop's
/// variable, `read NAME`, `${NAME:=x}`...): not one whose value changes
/// what runs or how the rest is read. The shell's own and the environment's
/// are upper case (`PATH`, `IFS`, `LC_ALL`, `BASH_ENV`, `LD_PRELOAD`); the
/// one lower-case exception is `histchars`.
fn assignable(name: &str) -> Result<(), String> {
    if name.is_empty() || name.chars().any(|c| c.is_ascii_uppercase()) || name == "histchars" {
        return Err(format!(
            "assigning `{name}` in the line is not inspected: only lower-case variables"
        ));
    }
    Ok(())
}

/// The variable that `${NAME=word}` or `${NAME:=word}` assigns.
fn assigned_in_expansion(source: &str) -> Option<&str> {
    let inner = source.strip_prefix("${")?;
    let end = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let (name, rest) = inner.split_at(end);
    (rest.starts_with('=') || rest.starts_with(":=")).then_some(name)
}

/// Whether `name=value` may be set for a command: a safe variable, and for
/// the locale a value under which the shell still reads UTF-8 (or ASCII).
/// In GBK, Big5 or Shift JIS a backslash or a quote byte can be the second
/// half of a character, so `eval` or `sh -c` under such a locale would read
/// the line differently from the gateway.
fn safe_assignment(name: &str, value: &Value) -> Result<(), String> {
    if !safe_variable(name) {
        return Err(format!(
            "setting `{name}` for a command is not inspected: only LANG, LC_* and TZ"
        ));
    }
    if name != "TZ" && (value.dynamic || !utf8_locale(&value.text)) {
        return Err(format!(
            "setting `{name}` to a locale other than C or UTF-8 is refused: the shell would read the line differently"
        ));
    }
    // A zone's name (`Europe/Paris`, `UTC`, `EST5EDT`, `<+03>-3`, `:/etc/
    // localtime`), nothing else: found in attack, `TZ=(['a[$(cmd)]']=1)`
    // is an array whose subscript bash evaluates.
    if name == "TZ"
        && (value.dynamic
            || !value
                .text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+-:/.,<>".contains(c)))
    {
        return Err("setting `TZ` to anything but a time zone's name is refused".into());
    }
    Ok(())
}

/// A locale under which text is read as UTF-8: `C`, `POSIX`, `C.UTF-8`,
/// `en_US.UTF-8`, `de_DE.utf8@euro`, or empty (unset).
pub(crate) fn utf8_locale(value: &str) -> bool {
    // Letters, digits and `_.-@` only: a locale name, nothing a splitter or
    // a shell reads more into (`C.UTF-8@\_sh`).
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-@".contains(c))
    {
        return false;
    }
    let value = value.split('@').next().unwrap_or(value);
    match value.rsplit_once('.') {
        None => matches!(value, "" | "C" | "POSIX"),
        Some((_, charset)) => {
            charset.eq_ignore_ascii_case("utf-8") || charset.eq_ignore_ascii_case("utf8")
        }
    }
}

fn with(wrappers: &[String], more: &str) -> Vec<String> {
    let mut wrappers = wrappers.to_vec();
    wrappers.push(more.to_string());
    wrappers
}

/// Builtins that run or evaluate a string: `trap`'s argument is code (its
/// commands, returned, are decided too); a variable name with a subscript
/// (`test -v 'a[$(...)]'`, `printf -v`, `read`, `unset`, `declare`...) is
/// evaluated; `mapfile -C` runs a callback; `let` is arithmetic; `shopt`
/// changes how the rest of the line is read.
fn evaluating_builtin(program: &str, argv: &[Value]) -> Result<Option<String>, String> {
    let args = || argv.iter().skip(1).map(|v| v.text.as_str());
    let subscripted = |arg: &str| {
        arg.find('[').is_some_and(|at| {
            at > 0
                && arg[..at]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    };
    match program {
        "trap" => {
            if argv.iter().skip(1).any(|v| v.dynamic) {
                return Err("`trap` with a string known only when it runs is not inspected".into());
            }
            // `trap [-lp] [[code] signal...]`; after `--` the code may
            // start with `-` (`trap -- '-x; rm -rf ~' EXIT`).
            let mut rest = args();
            match rest.next() {
                None | Some("-l" | "-p" | "-lp" | "-pl" | "-") => Ok(None),
                Some("--") => Ok(rest.next().map(str::to_string)),
                Some(option) if option.starts_with('-') => {
                    Err(format!("`trap {option}` is not inspected"))
                }
                Some(code) => Ok(Some(code.to_string())),
            }
        }
        // dash expands aliases in `sh -c` too: `alias x='rm -rf /'` then `x`.
        // `fc -s` runs a line from the history (`history -s` puts one
        // there), `compgen -C`/`-W` and `complete -C` run commands.
        // `bind -x` runs a command when a key is pressed.
        "shopt" | "let" | "enable" | "alias" | "fc" | "compgen" | "complete" | "bind" => {
            Err(format!("`{program}` is not inspected"))
        }
        // `jobs -x cmd` runs cmd.
        "jobs" if args().any(|a| a.starts_with('-') && a.contains('x')) => {
            Err("`jobs -x` runs a command: not inspected".into())
        }
        // `hash -p /usr/bin/rm ls` makes `ls` run rm.
        "hash" if args().any(|a| a.starts_with('-') && a.contains('p')) => {
            Err("`hash -p` makes a name run another program: refused".into())
        }
        // `declare -n x=PATH` makes `x` another name for PATH.
        "declare" | "typeset" | "local"
            if args().any(|a| a.starts_with(['-', '+']) && a.contains('n')) =>
        {
            Err(format!(
                "`{program} -n` makes a name stand for another variable: not inspected"
            ))
        }
        // `declare -i x='a[$(cmd)]'` evaluates what is assigned, and so do
        // the subscripts of an array's values (`x=([$(cmd)]=1)`).
        "declare" | "typeset" | "local" | "export" | "readonly"
            if args().any(|a| {
                (a.starts_with(['-', '+']) && a.contains('i'))
                    || (a.contains("=(") && a.contains('['))
            }) =>
        {
            Err(format!(
                "`{program}` with an integer attribute or array subscripts evaluates what it assigns: not inspected"
            ))
        }
        "mapfile" | "readarray" if args().any(|a| a.starts_with('-') && a.contains('C')) => {
            Err("`mapfile -C` runs a callback: not inspected".into())
        }
        "test" | "[" | "printf" | "read" | "unset" | "declare" | "typeset" | "local" | "export"
        | "readonly" | "mapfile" | "readarray" | "wait" | "getopts" => {
            // A name known only when it runs may hold a subscript, which is
            // evaluated (found in attack: `read "$v"` with `v='a[$(cmd)]'`).
            let named = |option: &str| {
                argv.iter().enumerate().skip(1).any(|(i, v)| {
                    (v.text == option && argv.get(i + 1).is_some_and(|name| name.dynamic))
                        || (v.text.starts_with(option) && v.dynamic)
                })
            };
            // Where an option may stand, a word known only when it runs
            // may be `-v` (found in attack: `[ $o "$v" ]` with o=-v).
            let operands: Vec<&Value> = argv
                .iter()
                .skip(1)
                .filter(|v| !(program == "[" && v.text == "]"))
                .collect();
            let dynamic_operator = match operands.as_slice() {
                [op, _] => op.dynamic,
                [not, op, _] if not.text == "!" => op.dynamic,
                [_, _, _] | [] | [_] => false,
                longer => longer.iter().any(|v| v.dynamic),
            };
            let dynamic_name = match program {
                "test" | "[" => named("-v") || named("-R") || dynamic_operator,
                "printf" => named("-v") || operands.first().is_some_and(|v| v.dynamic),
                _ => argv.iter().skip(1).any(|v| v.dynamic),
            };
            if dynamic_name {
                return Err(format!(
                    "`{program}` with a name known only when it runs may evaluate a subscript in it: not inspected"
                ));
            }
            if args().any(subscripted) {
                return Err(format!(
                    "`{program}` with a subscripted name evaluates it: not inspected"
                ));
            }
            // Builtins that assign the variables they name: `read PATH`
            // with `/tmp/x` on standard input. Words that are not names
            // (a prompt, a delimiter) are checked too, which refuses at
            // worst an upper-case prompt.
            match program {
                "read" | "mapfile" | "readarray" => {
                    for arg in args() {
                        match arg.strip_prefix('-') {
                            // `read -aPATH`: an array name given with its
                            // option.
                            Some(flags) if program == "read" => {
                                if let Some((_, name)) = flags.split_once('a') {
                                    if !name.is_empty() {
                                        assignable(name)?;
                                    }
                                }
                            }
                            Some(_) => {}
                            None => assignable(arg)?,
                        }
                    }
                }
                "getopts" => {
                    let mut words = args().skip_while(|a| *a == "--");
                    if let Some(name) = words.nth(1) {
                        assignable(name)?;
                    }
                }
                // `unset PATH` makes bash look commands up in the current
                // directory.
                "unset" => {
                    for arg in args().filter(|a| !a.starts_with('-')) {
                        assignable(arg)?;
                    }
                }
                // `wait -p NAME` assigns NAME; the rest are jobs and pids.
                "wait" => {
                    let mut words = args();
                    while let Some(arg) = words.next() {
                        match arg.strip_prefix('-') {
                            Some(flags) => {
                                if let Some((_, name)) = flags.split_once('p') {
                                    assignable(if name.is_empty() {
                                        words.next().unwrap_or("")
                                    } else {
                                        name
                                    })?;
                                }
                            }
                            None if arg.starts_with('%')
                                || arg.chars().all(|c| c.is_ascii_digit()) => {}
                            None => assignable(arg)?,
                        }
                    }
                }
                "printf" => {
                    let mut words = args();
                    while let Some(arg) = words.next() {
                        match arg.strip_prefix("-v") {
                            Some("") => assignable(words.next().unwrap_or(""))?,
                            Some(name) => assignable(name)?,
                            None => break,
                        }
                    }
                }
                _ => {}
            }
            // `export PATH=/tmp/x` changes what the next command runs, as
            // `PATH=/tmp/x cmd` would.
            if matches!(
                program,
                "declare" | "typeset" | "local" | "export" | "readonly"
            ) {
                for arg in argv
                    .iter()
                    .skip(1)
                    .filter(|v| !v.text.starts_with(['-', '+']))
                {
                    let name = arg
                        .text
                        .split_once('=')
                        .map_or(arg.text.as_str(), |(n, _)| n);
                    let value = Value {
                        text: arg.text.split_once('=').map_or("", |(_, v)| v).to_string(),
                        dynamic: arg.dynamic,
                    };
                    safe_assignment(name, &value)?;
                }
            }
            Ok(None)
        }
        // Options that change how the shell reads the rest of the line
        // (`-k` takes `PATH=x` anywhere as an assignment, `-o posix`,
        // `+B`) are refused; these only make it stricter or louder.
        "set" => {
            let mut args = argv.iter().skip(1).map(|v| v.text.as_str());
            while let Some(arg) = args.next() {
                if arg == "--" || arg == "-" {
                    break;
                }
                let Some(flags) = arg.strip_prefix(['-', '+']) else {
                    continue;
                };
                // `-o NAME` takes the next word, even grouped (`-eo pipefail`).
                let safe = flags.chars().all(|flag| match flag {
                    'o' => args.next().is_some_and(safe_shell_option),
                    flag => SAFE_SHELL_FLAGS.contains(flag),
                });
                if !safe {
                    return Err(format!(
                        "`set {arg}` changes how the shell reads the line: refused"
                    ));
                }
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

fn is_system_program(program: &str) -> bool {
    if !program.contains('/') {
        return true;
    }
    // `/usr/bin//env` and `/usr/bin/./nice` are the same programs (found in
    // attack: not looked through as wrappers).
    let program = program.replace("/./", "/");
    let mut program = program.as_str().to_owned();
    while program.contains("//") {
        program = program.replace("//", "/");
    }
    [
        "/bin/",
        "/usr/bin/",
        "/sbin/",
        "/usr/sbin/",
        "/usr/local/bin/",
    ]
    .iter()
    .any(|dir| {
        program
            .strip_prefix(dir)
            .is_some_and(|rest| !rest.contains('/'))
    })
}

fn basename(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// Whether an expansion evaluates what a variable holds: arithmetic on
/// variables (`$((X))`, which runs `a[$(...)]` in X's value), indirection
/// (`${!X}`), subscripts (`${a[X]}`), substrings (`${X:Y}`, `${*:Y}`) and
/// transformations (`${X@P}`). Plain `$X`, `${X}`, `${#X}` and
/// `${X:-word}` (and `:=`, `:+`, `:?`, `-`, `=`, `+`, `?`, `#`, `%`, `/`,
/// `^`, `,`) are only text; anything else is taken to evaluate.
/// What `$((` opens, up to the `))` that closes it with its parentheses
/// balanced; `None` when a `)` closes what it did not open, or nothing
/// closes it.
fn arithmetic_body(rest: &str) -> Option<&str> {
    let mut depth = 0usize;
    let mut chars = rest.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            ')' => return chars.next_if(|(_, c)| *c == ')').map(|_| &rest[..at]),
            _ => {}
        }
    }
    None
}

fn evaluates_values(source: &str) -> bool {
    if let Some(expr) = source.strip_prefix("$((") {
        return expr
            .chars()
            .any(|c| c.is_ascii_alphabetic() || c == '_' || c == '$');
    }
    let Some(inner) = source.strip_prefix("${") else {
        return false;
    };
    let inner = inner.strip_suffix('}').unwrap_or(inner);
    if inner.starts_with('!') || inner.contains('[') || inner.contains('@') {
        return true;
    }
    // `${#NAME}`: a length.
    if let Some(name) = inner.strip_prefix('#') {
        if !name.is_empty() && parameter_len(name) == name.len() {
            return false;
        }
    }
    let name = parameter_len(inner);
    if name == 0 {
        return true;
    }
    let rest = &inner[name..];
    let text_only = rest.is_empty()
        || [":-", ":=", ":+", ":?"]
            .iter()
            .any(|op| rest.starts_with(op))
        || rest.starts_with(['-', '=', '+', '?', '#', '%', '/', '^', ',']);
    !text_only
}

/// How long the parameter's name at the start of `text` is: a variable's
/// name, a position's digits, or one special parameter (`*`, `#`, `?`,
/// `$`, `-`); 0 for none.
fn parameter_len(text: &str) -> usize {
    let run = |keep: fn(char) -> bool| text.find(|c: char| !keep(c)).unwrap_or(text.len());
    match text.chars().next() {
        Some(c) if c.is_ascii_digit() => run(|c| c.is_ascii_digit()),
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            run(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        Some('*' | '#' | '?' | '$' | '-') => 1,
        _ => 0,
    }
}

fn has_substitution(text: &str) -> bool {
    // `$((` opens arithmetic, not a substitution.
    text.match_indices("$(")
        .any(|(at, _)| !text[at + 2..].starts_with('('))
        || text.contains('`')
        || text.contains("<(")
        || text.contains(">(")
}

/// Whether unquoted text changes when the shell expands it: globs and brace
/// expansion (`r?`, `{r,}m`).
fn expands(text: &str) -> bool {
    text.contains(['*', '?', '['])
        || (text.contains('{') && (text.contains(',') || text.contains("..")))
        // bash expands a tilde after `=` or `:` in any word that looks
        // like an assignment, an argument too (found in attack: `eval
        // echo x=~+` ran the name of a directory the user made).
        || text.contains("=~")
        || text.contains(":~")
}

enum Unwrapped {
    /// Not a wrapper (or a wrapper that runs nothing).
    Not,
    /// A wrapper: the command it runs starts after this many words.
    Runs(usize),
    /// A wrapper that runs a command line given as a string (`sh -c`,
    /// `eval`): its label, and the line.
    Source(String, String),
}

/// If `argv` runs another command through a wrapper, where that command is.
fn unwrap(name: &str, argv: &[Value]) -> Result<Unwrapped, String> {
    let words: Vec<&str> = argv.iter().map(|v| v.text.as_str()).collect();
    let dynamic_after = |i: usize| argv.iter().skip(i).any(|v| v.dynamic);
    let unknown = |option: &str| {
        Err(format!(
            "cannot tell what `{name} {option}` runs: the command is refused"
        ))
    };
    // Options of each wrapper that take a value.
    let (with_value, flags): (&[&str], &[&str]) = match name {
        "sudo" | "doas" => (
            &[
                "-u", "-g", "-h", "-C", "-p", "-r", "-t", "-U", "-D", "-R", "-T",
            ],
            &[
                "-E", "-H", "-n", "-S", "-b", "-k", "-P", "-A", "-B", "-i", "-s", "--",
            ],
        ),
        "env" => (
            &["-u", "-C", "--unset", "--chdir"],
            &["-i", "-0", "--ignore-environment", "--null", "-"],
        ),
        "nice" => (&["-n", "--adjustment"], &[]),
        "timeout" => (
            &["-s", "-k", "--signal", "--kill-after"],
            &["--preserve-status", "--foreground", "-v", "--verbose"],
        ),
        "stdbuf" => (&["-i", "-o", "-e"], &[]),
        "nohup" | "setsid" | "builtin" => (&[], &["-f", "-w", "--fork", "--wait"]),
        "command" => (&[], &["-p"]),
        // `exec -a NAME` sets the program's argv[0], which multi-call
        // programs read as what to be (`systemctl` as `reboot`): refused
        // as an unknown option.
        // `exec -c` clears the environment: see `cleared_path`.
        "exec" => (&[], &["-l"]),
        "time" => (&[], &["-p"]),
        // `-I`, `-i` and `--replace` put input into any word, the
        // command's name too: refused as unknown options.
        "xargs" => (
            &[
                "-a",
                "-d",
                "-E",
                "-L",
                "-n",
                "-P",
                "-s",
                "--arg-file",
                "--delimiter",
                "--max-args",
                "--max-procs",
            ],
            &[
                "-0",
                "-o",
                "-p",
                "-r",
                "-t",
                "-x",
                "--null",
                "--no-run-if-empty",
                "--verbose",
                "--open-tty",
                "--interactive",
                "--exit",
            ],
        ),
        // Other shells (zsh, ksh) have grammars of their own: decided as
        // programs.
        "sh" | "bash" | "dash" => {
            return shell(name, &words, argv);
        }
        "eval" => {
            if dynamic_after(1) {
                return Ok(Unwrapped::Not);
            }
            return Ok(Unwrapped::Source("eval".into(), words[1..].join(" ")));
        }
        _ => return Ok(Unwrapped::Not),
    };
    let mut i = 1;
    // `env`: once a `VAR=value` is seen, the next word is the command.
    let mut assignments = false;
    while let Some(word) = words.get(i) {
        if argv[i].dynamic {
            return Ok(Unwrapped::Not);
        }
        if *word == "--" {
            i += 1;
            break;
        }
        if name == "env" {
            cleared_path(word, words.get(i + 1).copied())?;
        }
        if name == "exec" && word.starts_with('-') && word.contains('c') {
            return Err("`exec -c` starts the command without PATH, and bash then runs programs from the current directory: refused".into());
        }
        if name == "env" && wrapper_assignment(word)? {
            assignments = true;
            i += 1;
            continue;
        }
        if assignments {
            break;
        }
        // env splits the string of `-S` by rules of its own (escapes such
        // as `\_`, `${VAR}`, carriage returns and form feeds as spaces):
        // not read as a shell would, so not looked through.
        if name == "env" && (word.starts_with("-S") || word.starts_with("--split-string")) {
            return Err("`env -S` splits its string by rules of its own: not inspected".into());
        }
        if !word.starts_with('-') || (*word == "-" && name != "env") {
            break;
        }
        if with_value.contains(word) {
            i += 2;
        } else if flags.contains(word)
            || with_value
                .iter()
                .any(|o| o.starts_with("--") && word.starts_with(&format!("{o}=")))
            || (name == "nice" && word.len() > 1 && word[1..].chars().all(|c| c.is_ascii_digit()))
            || (name == "sudo" && word.starts_with("-u") && word.len() > 2)
        {
            i += 1;
        } else if name == "command" && (*word == "-v" || *word == "-V") {
            // Prints what a name is; runs nothing.
            return Ok(Unwrapped::Not);
        } else {
            return unknown(word);
        }
    }
    // `sudo VAR=value cmd` sets VAR for cmd, as `env` does.
    if name == "sudo" {
        while let Some(word) = words.get(i) {
            if argv[i].dynamic {
                return Ok(Unwrapped::Not);
            }
            if !wrapper_assignment(word)? {
                break;
            }
            i += 1;
        }
    }
    if name == "timeout" {
        // The duration comes before the command.
        i += 1;
    }
    if i >= words.len() {
        // A wrapper alone (`sudo -i`, `env`): decided as itself.
        return Ok(Unwrapped::Not);
    }
    Ok(Unwrapped::Runs(i))
}

/// Whether a wrapper's word is a `NAME=value` it sets for the command
/// (`env LANG=C ls`, `sudo LANG=C ls`); an error when NAME may not be set.
fn wrapper_assignment(word: &str) -> Result<bool, String> {
    let Some((variable, value)) = word.split_once('=').filter(|_| !word.starts_with('-')) else {
        return Ok(false);
    };
    safe_assignment(
        variable,
        &Value {
            text: value.to_string(),
            dynamic: false,
        },
    )?;
    Ok(true)
}

/// Refuses an `env` option that takes PATH away: bash started without one
/// looks names up in the current directory too (its default PATH ends in
/// `.`), so `env -i bash -c 'ls'` can run `./ls`.
fn cleared_path(word: &str, next: Option<&str>) -> Result<(), String> {
    let unset = match word {
        "-i" | "-" | "--ignore-environment" => {
            return Err(format!(
                "`env {word}` starts the command without PATH, and bash then runs programs from the current directory: refused"
            ))
        }
        "-u" | "--unset" => next.unwrap_or(""),
        _ => match word.strip_prefix("--unset=").or_else(|| word.strip_prefix("-u")) {
            Some(name) => name,
            None => return Ok(()),
        },
    };
    if safe_variable(unset) {
        return Ok(());
    }
    Err(format!(
        "`env` unsetting `{unset}` is not inspected: only LANG, LC_* and TZ"
    ))
}

/// Single-letter shell options that change nothing in how a line is read:
/// errexit, nounset, xtrace, verbose (and `l`, a login shell, on the command
/// line only).
const SAFE_SHELL_FLAGS: &str = "euxv";

/// `-o NAME` options with no effect on how a line is read.
fn safe_shell_option(name: &str) -> bool {
    matches!(
        name,
        "errexit" | "nounset" | "xtrace" | "verbose" | "pipefail"
    )
}

/// `sh -c 'line'` (and `bash -lc`, `sh -e -c`, `bash -o pipefail -c`).
///
/// Only options known to leave the reading of the line alone are taken:
/// any other may make the shell read something else than the string after
/// `-c` (`-s` reads standard input, `--rcfile` takes `-c` as its file,
/// `+c` is not `-c`), or read it differently (`-k`, `-i` with its rc files,
/// `+O interactive_comments`, `-O extglob`).
fn shell(name: &str, words: &[&str], argv: &[Value]) -> Result<Unwrapped, String> {
    let refused = |option: &str| {
        Err(format!(
            "`{name} {option}` may read another line than the one after -c, or read it differently: refused"
        ))
    };
    let mut i = 1;
    let mut command = false;
    while let Some(word) = words.get(i) {
        if argv[i].dynamic {
            return Ok(Unwrapped::Not);
        }
        if *word == "--" {
            i += 1;
            break;
        }
        if matches!(*word, "--login" | "--noprofile" | "--norc") {
            i += 1;
            continue;
        }
        let Some(flags) = word.strip_prefix('-') else {
            if word.starts_with('+') {
                return refused(word);
            }
            break;
        };
        if flags.is_empty() || flags.starts_with('-') {
            return refused(word);
        }
        // `-o NAME` takes the next word, even grouped (`-eo pipefail`).
        let mut values = 0;
        for flag in flags.chars() {
            match flag {
                'c' => command = true,
                'l' => {}
                'o' => {
                    values += 1;
                    let value = words.get(i + values).copied().unwrap_or("");
                    if !safe_shell_option(value) {
                        return refused(&format!("-o {value}"));
                    }
                }
                flag if SAFE_SHELL_FLAGS.contains(flag) => {}
                _ => return refused(word),
            }
        }
        i += 1 + values;
    }
    if !command {
        // A script file: decided as the shell.
        return Ok(Unwrapped::Not);
    }
    match (words.get(i), argv.get(i)) {
        (Some(line), Some(value)) if !value.dynamic => {
            Ok(Unwrapped::Source(format!("{name} -c"), line.to_string()))
        }
        (Some(_), _) => Ok(Unwrapped::Not),
        (None, _) => Err(format!("`{name} -c` without a command")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn as_written(line: &str) -> Result<(), String> {
        let tokens = brush_parser::uncached_tokenize_str(line, &Default::default())
            .map_err(|e| e.to_string())?;
        read_as_written(line, &tokens)
    }

    #[test]
    fn the_tokens_must_be_the_line_as_written() {
        // Found in attack, each first refused by a check of its own: the
        // tokenizer drops or moves text that bash runs.
        for line in [
            "cat <<EOF $((sh -c 'id > /tmp/x') )\nEOF",
            "cat <<EOF \"$((id) )\"\nEOF",
            "cat <<$(('1'))\n$(('1'))\nid > /tmp/x\n1",
            "true || echo $(( 1 # )); id > /tmp/x\n))",
            "echo ${x#<<true}\ntrue\nid",
            "echo $((1 # x\n))",
            "echo ${ touch /tmp/x; }",
            "cat <<EOF \"a\n$((sh -c 'id > /tmp/x') )\"\nEOF",
            "cat <<EOF 'a\n'$((touch M) )\nEOF",
            "cat <<EOF; echo \"a\n$((id > /tmp/x) )\"\nEOF",
            // bash ends this document at `'true`, the tokenizer at `true`.
            "cat <<\"'\"true\n'true\nid > /tmp/x\ntrue",
            "cat <<'a\"b'\nab\nid > /tmp/x\na\"b",
            // A newline inside `$((` after `<<` starts the tokenizer's
            // document there, hiding the `)` that makes bash run `. /???/N`.
            "( cat <<1 \"\n\" $((\n. /???/37037) \n1\n))\n)",
        ] {
            assert!(as_written(line).is_err(), "{line:?}");
            assert!(parse(line).is_err(), "{line:?}");
        }
        let names: Vec<String> = parse("ls # comment \\\nid")
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["ls", "id"]);
        // Round 37a: expansions the word parser cannot read became text;
        // a comment that ends a substitution for bash and not for the
        // tokenizer; a function name dash expands under `sh -c`.
        for line in [
            "for y in 'a[$(touch /tmp/x)]'; do echo ${y:y:1:1}; done",
            "systemctl status --no-pager ${z:0:1:1}--host=127.0.0.1:29991",
            "cat < ${z:0:1:1}/dev/tcp/127.0.0.1/29992",
            "echo \"${y:0:y:}\"",
            "echo \"$\\\n(id > /tmp/x; echo \"a b\")\"",
            "echo $( #) <<EOF\nid > /tmp/x\n)\nEOF",
            "echo $(true  #)",
            "echo `ls #`",
            "sh -c 'function $(id > /tmp/x)\n{ true; }'",
            "sh -c 'function `id`\n{ true; }'",
        ] {
            assert!(parse(line).is_err(), "{line:?}");
        }
        assert!(parse("echo $(echo 'a #b' \"c #d\" e#f) ${#x} $#").is_ok());
        assert!(parse("for z in ';ID > /TMP/X'; do eval echo ${z~~}; done").is_err());
        // A tilde after `=` is expanded: `eval` is not looked through, and
        // is decided as itself, with words known only when it runs.
        let commands = parse("env -C '/tmp/d;id>f;' bash -c 'eval echo x=~+'").unwrap();
        let eval = commands.last().unwrap();
        assert!(eval.name == "eval" && eval.dynamic, "{commands:?}");
        let commands = parse("echo x=~+ a:~b").unwrap();
        assert!(commands[0].dynamic, "{commands:?}");
        assert!(parse("f() { ls; }; f").is_ok());
        // bash reads a comment inside `$( )` too; the tokenizer drops it
        // from the word, which is then not the line.
        assert!(parse("echo $(ls # all\n)").is_err());
        for line in [
            "ls -l /tmp | grep x && echo ok || echo no; id &",
            "cat <<EOF > out\nbody $x\nEOF\necho after",
            "cat <<'EOF' <<-X\nbody\nEOF\n\t\tx\n\tX\necho ok",
            "cat <<\"E\"OF\n\tEOF\nEOF",
            "cat <<EOF\nEOF",
            "cat <<EOF\n\nEOF\n",
            "echo a\\\nb \"e\\\nf\" 'c\\\nd'",
            "echo a \\\n  b",
            "# first\nls # then\n\n  id   # last",
            "ls # comment \\\nid",
            "echo é 'ü' \"ß\"",
            "case x in a) ls;; (b) id;; esac",
            "ls 2>&1 |& cat && { ls; } || (id); ! true",
            "f() { :; }; echo `ls` \\; $(ls)",
            "x=1 y=$(ls) ls >>f 3<&0 <>g\n",
            "\n\tls\t\n",
        ] {
            as_written(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        }
        // A word's pieces must be the word: a substitution runs what its
        // parentheses hold, and no text is skipped.
        let piece = |piece, start_index, end_index| brush_parser::word::WordPieceWithSource {
            piece,
            start_index,
            end_index,
        };
        let word = "a$(ls)b";
        let substitution = |inner: &str| WordPiece::CommandSubstitution(inner.into());
        let text = |t: &str| WordPiece::Text(t.into());
        let pieces = [
            piece(text("a"), 0, 1),
            piece(substitution("ls"), 1, 6),
            piece(text("b"), 6, 7),
        ];
        assert!(pieces_as_written(word, &pieces, 0, word.len()));
        let moved = [
            piece(text("a"), 0, 1),
            piece(substitution("id"), 1, 6),
            piece(text("b"), 6, 7),
        ];
        assert!(!pieces_as_written(word, &moved, 0, word.len()));
        assert!(!pieces_as_written(word, &pieces[..2], 0, word.len()));
        assert!(!pieces_as_written(
            word,
            &[piece(text("a"), 0, 1), piece(text("b"), 6, 7)],
            0,
            word.len()
        ));
        assert_eq!(
            delimiter_as_bash_reads("\"'\"true").as_deref(),
            Some("'true")
        );
        assert_eq!(delimiter_as_bash_reads("'E'\"O\"F").as_deref(), Some("EOF"));
        assert_eq!(delimiter_as_bash_reads("'EOF"), None);
        // The tag ends the document only alone on its line, after `<<-`
        // without its leading tabs.
        assert!(here_body("a\nEOF\n", "a\n", "EOF", false));
        assert!(here_body("\ta\n\tEOF", "a\n", "EOF", true));
        assert!(!here_body("\ta\n\tEOF", "\ta\n", "EOF", false));
        assert!(!here_body("a\nEOF\nb\nEOF\n", "a\nEOF\nb\n", "EOF", false));
        assert!(!here_body("a\nEOF \n", "a\n", "EOF", false));
    }

    fn texts(line: &str) -> Vec<String> {
        parse(line).unwrap().into_iter().map(|c| c.text).collect()
    }

    #[test]
    fn lists_and_pipelines_are_split_into_commands() {
        assert_eq!(texts("ls -l /tmp"), ["ls -l /tmp"]);
        assert_eq!(
            texts("uptime; rm -rf / && echo ok || true | cat &"),
            ["uptime", "rm -rf /", "echo ok", "true", "cat"]
        );
        assert_eq!(texts("if true; then rm x; fi"), ["true", "rm x"]);
        assert_eq!(texts("for f in a b; do rm $f; done")[0], "rm $f");
        assert_eq!(texts("f() { rm -rf /; }; f"), ["rm -rf /", "f"]);
        assert_eq!(texts("(cd /; rm -rf x)"), ["cd /", "rm -rf x"]);
    }

    #[test]
    fn quoting_is_resolved() {
        let c = &parse(r#"'r'"m" -rf \/"#).unwrap()[0];
        assert_eq!(c.program, "rm");
        assert_eq!(c.args, ["-rf", "/"]);
        assert!(!c.dynamic);
        assert_eq!(c.line, r#"'r'"m" -rf \/"#);
    }

    #[test]
    fn wrappers_are_looked_through() {
        for line in [
            "sudo rm -rf /",
            "sudo -u root -n rm -rf /",
            "env LANG=C rm -rf /",
            "sudo LANG=C rm -rf /",
            "sudo -u root -- LC_ALL=C rm -rf /",
            "sh -c 'rm -rf /'",
            "bash -lc \"rm -rf /\"",
            "sudo sh -c 'env LC_ALL=C rm -rf /'",
            "nohup nice -n 5 timeout 10 rm -rf /",
            "eval rm -rf /",
            "/usr/bin/env rm -rf /",
            "xargs rm -rf /",
        ] {
            let commands = parse(line).unwrap();
            let last = commands.last().unwrap();
            assert_eq!(last.name, "rm", "{line}");
            assert_eq!(last.args, ["-rf", "/"], "{line}");
            assert!(!last.wrappers.is_empty(), "{line}");
        }
        let c = &parse("sudo sh -c 'rm -rf /'").unwrap()[0];
        assert_eq!(c.wrappers, ["sudo", "sh -c"]);
    }

    #[test]
    fn substitution_is_a_command_of_its_own() {
        let commands = parse("echo $(rm -rf /) `id`").unwrap();
        let programs: Vec<&str> = commands.iter().map(|c| c.program.as_str()).collect();
        assert_eq!(programs, [SUBSTITUTION, "rm", SUBSTITUTION, "id", "echo"]);
        let echo = commands.last().unwrap();
        assert!(echo.dynamic);
        assert_eq!(echo.args, ["$(rm -rf /)", "`id`"]);
        // Inside double quotes, in assignments and redirections too.
        for line in [
            r#"echo "$(rm -rf /)""#,
            "cat < <(rm -rf /)",
            "echo > $(rm -rf /)",
        ] {
            let commands = parse(line).unwrap();
            assert!(commands.iter().any(|c| c.name == "rm"), "{line}");
            assert!(commands.iter().any(|c| c.program == SUBSTITUTION), "{line}");
        }
    }

    #[test]
    fn words_known_only_at_run_time_match_no_program() {
        for line in ["$CMD -rf /", "{r,}m -rf /", "/bin/r? -rf /", "~/rm"] {
            let c = &parse(line).unwrap()[0];
            assert!(c.dynamic, "{line}");
            assert_ne!(c.name, "rm", "{line}");
        }
    }

    #[test]
    fn what_cannot_be_inspected_is_refused() {
        for line in [
            "echo ${X:-$(rm -rf /)}",
            "[[ $(rm -rf /) ]]",
            "sudo --weird rm",
            "env --weird rm",
            "echo 'unterminated",
            "sh -c",
            "",
            "   ",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
    }

    #[test]
    fn what_bash_reads_differently_is_refused() {
        for line in [
            "ls; ((rm -rf /) )",
            "((x++))",
            "for ((i=0;i<1;i++)); do rm -rf /; done",
            "cat <<'a\\b'\na\\b\nrm -rf /\nab\n",
            "echo `echo \"\\$(rm -rf /)\"`",
            "ls; env -S '' rm -rf /",
            "xargs -I{} sh -c 'ls {}'",
            "read X; echo ${X@P}",
            "echo $((X))",
            "echo ${!X}",
            "echo ${a[$i]}",
            "echo ${X:$Y}",
            "[[ $X -eq 0 ]]",
            &format!("{}ls{}", "(".repeat(100), ")".repeat(100)),
            &"x".repeat(20_000),
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
        // Plain expansions are text.
        assert!(parse("echo $HOME ${USER} ${X:-none} $((1 + 2))").is_ok());
        assert!(parse("echo ${#x} ${?} ${1} ${_} ${*}").is_ok());
        // Found in attack: what `${ }` holds is evaluated as code.
        for line in [
            "echo ${z:-$((touch /tmp/x) )}",
            "ls <&${z:-$((touch /tmp/x) )}",
            "true ${z:=$((touch /tmp/x) )}",
            "for y in 'a[$(touch /tmp/x)]'; do echo ${z:-$((y))}; done",
            "echo ${ touch /tmp/x; }",
            "echo ${|touch /tmp/x; }",
            "echo ${\ttouch /tmp/x; }",
            "echo ${\ntouch /tmp/x\n}",
            "echo ${(touch /tmp/x)}",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
        // Found in attack: special parameters have substrings too.
        for line in [
            "for y in 'a[$(touch /tmp/x)]'; do echo ${*:y}; done",
            "echo ${-:y}",
            "echo ${*:0:y}",
            "echo ${#:y}",
            "echo ${?:y} ${$:y}",
            "echo ${1:y}",
            "test -v \"$v\"",
            "[ -v \"$v\" ]",
            "printf -v \"$v\" x",
            "read -r \"$v\"",
            "unset -v \"$v\"",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
        for line in [
            "echo ${#x} ${*} ${x%.txt} ${x^^} ${x/a/b}",
            "test -f \"$f\"",
            "printf '%s' \"$x\"",
        ] {
            assert!(parse(line).is_ok(), "{line}");
        }
        // Found in attack (third round).
        for line in [
            "echo {$,x}{y:='$(touch F)'}{$,x}{y@P}",
            "echo {$,x}[y]",
            "echo ${x#<<true}\ntouch F\ntrue",
            "echo \"${x:-<<true}\"\ntouch F\ntrue",
            "TZ=(['a[$(touch F)]']=1) ls",
            "TZ='a[$(touch F)]' ls",
            "declare -i x='a[$(touch F)]'",
            "declare -gi x=1",
            "local x=([1]=2)",
            "o=-v; [ $o \"$v\" ]",
            "test ! $o x",
            "printf $o x",
            "mapfile -tC 'touch F' -c 1 z",
            "bind -x '\"q\": touch F'",
            "echo hi <&$x",
            "echo hi >&$x",
            "cat <<EOF $((sh -c 'id > /tmp/x') )\nEOF",
            "cat <<EOF \"$((id) )\"\nEOF",
            "cat <<$(('1'))\n$(('1'))\nid > /tmp/x\n1",
            "cat <<`x`\nx\nid\n`x`",
            "true || echo $(( 1 # )); id > /tmp/x\n))",
            // Round 38c: dash ends the arithmetic at the first `))`.
            "sh -c 'true || echo $(( \" )) ; . /????/[!0-9]???/??/0 ; : \" )) #\"'",
            "sh -c \"true || echo \\$(( 1 ' )) ; . /???/38038 ; : ' )) #'\"",
            "echo $(( 1 \\)) ))",
            "echo $(( `id` ))",
            "echo $(( 1 + (2 ))",
            "echo $((id) ) ; echo ))",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
        // Arithmetic every shell reads alike.
        for line in [
            "echo $(( (1 + 2) * 3 ))",
            "echo $(((1+2)*3))",
            "echo $((1<<2))",
        ] {
            let commands = parse(line).unwrap();
            assert_eq!(commands.len(), 1, "{line}: {commands:?}");
        }
        for line in [
            "/usr/bin//env touch F",
            "/usr/bin/./nice touch F",
            "/bin/.//./env touch F",
        ] {
            let commands = parse(line).unwrap();
            assert!(
                commands.iter().any(|c| c.name == "touch"),
                "{line}: {commands:?}"
            );
        }
        for line in [
            "TZ=Europe/Paris date",
            "TZ='<+03>-3' date",
            "[ \"$a\" = \"$b\" ]",
            "[ -f \"$f\" ]",
            "test -n \"$x\"",
            "echo {a,b}",
        ] {
            assert!(parse(line).is_ok(), "{line}");
        }
        // At the top, `$((cmd) )` is the command substitution bash reads.
        let commands = parse("echo $((touch /tmp/x) )").unwrap();
        assert!(commands.iter().any(|c| c.name == "touch"), "{commands:?}");
    }

    #[test]
    fn what_sh_reads_differently_from_bash_is_refused() {
        for line in [
            // One `echo` to bash; `echo`, `touch` and `echo` to dash.
            r#"sh -c "echo \$'\\' ; touch /tmp/p ; echo ' #'""#,
            "echo $'\\' ; touch /tmp/p ; echo ' #'",
            "env sh -c \"echo \\$'\\\\' ; touch /tmp/p ; echo ' #'\"",
            // Escaped: `$'` only in the inner line.
            r"sh -c \$\'\\\'\ \;\ touch\ /tmp/p\ \;\ echo\ \'\ \#\'",
            "echo $\"a\"",
            "$'\\x72m' -rf /",
            // `ls` with arguments to bash; `ls &` then `rm` to dash.
            "ls &>/tmp/x rm -rf /",
            "ls &>>/tmp/x rm -rf /",
            "sh -c 'ls &>/dev/null rm -rf /'",
            "ls |& cat",
            "cat <<< x",
            // Quotes in a parameter expansion: one `echo` to bash, three
            // commands to dash.
            r#"echo "${u:-'}'" ; touch /tmp/p ; echo "'}'}""#,
            r#"sh -c 'echo "${u:-"}"}" ; touch /tmp/p'"#,
            r"echo ${u:-\}} ; touch /tmp/p",
            // A nested expansion ends the first one early for a naive reader.
            r#"echo "${u:-${v}'}'" ; touch /tmp/p ; echo "'}'}""#,
            "echo ${X:-none",
            // bash ends this here-document at `true` (`tr\` and `ue`
            // joined), so `touch` runs; the parser reads it as text.
            "cat <<true\ntr\\\nue\ntouch /tmp/p\ntrue",
            // A backslash-newline is dropped before the line is read.
            "echo $\\\n'\\' ; touch /tmp/p ; echo ' #'",
            "ls &\\\n>/tmp/x rm -rf /",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
        // POSIX redirections stay readable.
        for line in ["ls 2>&1", "ls >&2", "ls 2>/dev/null | wc -l"] {
            assert!(parse(line).is_ok(), "{line}");
        }
    }

    #[test]
    fn the_second_review_is_closed() {
        for line in [
            "((echo a) ; cat <<EOF\nx '\nEOF\nrm -rf ~\n# '\n)",
            "PATH=/tmp ls",
            "LD_PRELOAD=/tmp/x.so ls",
            "BASH_ENV=/tmp/x bash -c ls",
            "env 'BASH_FUNC_ls%%=() { rm -rf ~; }' bash -c ls",
            "PS4='$(rm -rf ~)' bash -xc true",
            "for X in 'a[$(rm -rf ~)]'; do echo $[X]; done",
            "echo {a[X]}>/dev/null",
            "cat <<E\n${LC_X@P}\nE",
            "bash -O extglob -c '!(ls)'",
            "shopt -s extglob",
            "test -v 'a[X]'",
            "[ -v 'a[X]' ]",
            "printf -v 'a[X]' x",
            "read 'a[X]'",
            "mapfile -C cb x",
            "let x=1",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
        // Grouped shell options take their values in order.
        let c = &parse("bash -co pipefail 'rm -rf /'").unwrap()[0];
        assert_eq!(c.name, "rm");
        // Brace expansion across quotes is known only when it runs.
        let c = &parse("timeout {\"5\",rm} ls x").unwrap()[0];
        assert_eq!(c.name, "timeout");
        assert!(c.dynamic);
        // trap's string is code, decided too.
        let commands = parse("trap 'rm -rf ~' EXIT").unwrap();
        assert!(commands.iter().any(|c| c.name == "rm"), "{commands:?}");
        // The locale may be set.
        assert_eq!(parse("LANG=C ls").unwrap()[0].text, "ls");
    }

    #[test]
    fn assignments_after_the_name_are_arguments() {
        let commands = parse("eval true A=';rm -rf /'").unwrap();
        assert!(commands.iter().any(|c| c.name == "rm"), "{commands:?}");
        let c = &parse("sudo -p P=x ls").unwrap();
        assert_eq!(c[0].text, "ls");
    }

    #[test]
    fn only_system_wrappers_are_looked_through() {
        let c = &parse("/tmp/sudo ls").unwrap()[0];
        assert_eq!(c.program, "/tmp/sudo");
        let c = &parse("/usr/bin/sudo ls").unwrap()[0];
        assert_eq!(c.program, "ls");
        let c = &parse("zsh -c 'ls *(e:\"rm -rf /\":)'").unwrap()[0];
        assert_eq!(c.name, "zsh");
        // An extended glob is not a subshell to bash.
        let c = &parse("!(rm -rf /)");
        assert!(c.is_err() || c.as_ref().unwrap().iter().any(|c| c.name == "rm"));
    }

    #[test]
    fn deep_lines_are_refused_or_read_quickly() {
        for (open, close) in [
            ("if true; then ", "fi; "),
            ("while true; do ", "done; "),
            ("case x in x) ", ";; esac; "),
            ("( ", ") "),
            ("f() ( ", ") "),
            ("echo $(", ") "),
        ] {
            for depth in [12, 13, 64, 65, 500] {
                let line = format!("{}true; {}", open.repeat(depth), close.repeat(depth));
                if line.len() > MAX_LINE {
                    continue;
                }
                let started = std::time::Instant::now();
                let read = parse(&line);
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(2),
                    "{open:?} x {depth}: {:?}",
                    started.elapsed()
                );
                if depth > MAX_COMPOUNDS {
                    assert!(read.is_err(), "{open:?} x {depth}");
                }
            }
        }
    }

    #[test]
    fn shells_are_looked_through_only_with_options_that_keep_the_line() {
        assert_eq!(texts("bash -lc 'ls /'"), ["ls /"]);
        assert_eq!(texts("sh -e -c 'ls /'"), ["ls /"]);
        assert_eq!(texts("bash -o pipefail -c 'ls | wc'"), ["ls", "wc"]);
        assert_eq!(texts("bash --login -c ls"), ["ls"]);
        for line in [
            "sh -sc ls",
            "sh +c -s ls",
            "bash --rcfile -c -s ls",
            "bash --init-file -c -s ls",
            "bash -kc 'cat PATH=/tmp/x'",
            "bash -o keyword -c 'cat PATH=/tmp/x'",
            "bash +O interactive_comments -ic 'echo # ; touch x'",
            "bash -ic ls",
            "bash -O extglob -c ls",
            "set -k; cat PATH=/tmp/x",
            "set -o posix; ls",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
        assert_eq!(texts("set -eu; ls"), ["set -eu", "ls"]);
        assert_eq!(texts("set -eo pipefail; ls"), ["set -eo pipefail", "ls"]);
        assert!(parse("set -eo keyword; ls").is_err());
    }

    #[test]
    fn the_locale_stays_utf8_and_dev_tcp_is_no_tunnel() {
        for line in [
            "LC_ALL=zh_CN.GBK eval 'echo ok'",
            "env LANG=ja_JP.SJIS sh -c ls",
            "export LC_ALL=zh_TW.BIG5; eval ls",
            "export PATH=/tmp/x; cat",
            "cat </dev/tcp/127.0.0.1/9090",
            "{ cat 1<&3 & cat <&3; } 3</dev/tcp/127.0.0.1/9090",
            "exec 3<>/dev/udp/127.0.0.1/53",
            "cat < $F",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
        assert_eq!(texts("LC_ALL=C.UTF-8 ls"), ["ls"]);
        assert_eq!(texts("env LANG=de_DE.utf8@euro ls"), ["ls"]);
        assert_eq!(texts("cat < /etc/hostname"), ["cat"]);
        assert!(utf8_locale("C") && utf8_locale("en_US.UTF-8") && !utf8_locale("zh_CN.GB18030"));
    }

    #[test]
    fn the_line_assigns_no_variable_that_changes_what_runs() {
        for line in [
            "for PATH in /tmp/x; do ls; done",
            "for LC_ALL in zh_CN.GBK; do eval ls; done",
            "echo ${LC_ALL:=zh_CN.GBK}; eval ls",
            "echo ${PATH=/tmp/x}; ls",
            "read PATH; ls",
            "read -r IFS; ls",
            "printf -v PATH /tmp/x; ls",
            "printf -vPATH /tmp/x; ls",
            "mapfile PATH; ls",
            "getopts ab OPT; ls",
            "coproc PATH { ls; }",
            "xargs -I wc nice wc -c x",
            "xargs -i sh -c {}",
            "xargs --replace=wc wc",
            "exec -a reboot systemctl status",
            "echo \"`echo \\\"x`\"",
            // What a name runs, changed by a builtin.
            "time -- systemctl restart cron",
            "time -p -- rm -rf / --help",
            "cd /tmp/x; unset PATH; ls",
            "unset -v PATH; ls",
            "hash -p /usr/bin/rm ls; ls -rf /",
            "hash -dp /usr/bin/rm ls",
            "sleep 1 & wait -n -p PATH; ls",
            "wait -pPATH %1",
            "wait PATH",
            "declare -n x=PATH; read x; ls",
            "local -rn x=PATH",
            // Round 14.
            "coproc x$(id) { true; }",
            "coproc sh\n{ true; }",
            "env -i -C /tmp/x bash -c 'sudo ls'",
            "env - bash -c ls",
            "env -u PATH bash -c ls",
            "env -uPATH bash -c ls",
            "env --unset=PATH bash -c ls",
            "sh -c 'time -q rm -rf /'",
            "sudo X=1 rm -rf /",
            "sudo PATH=/tmp/x ls",
            "read -aPATH <<< x; ls",
            "read -ra PATH; ls",
            "getopts -- b PATH -b; ls",
            "sh -c 'alias x=\"rm -rf /\"\nx'",
            // Round 15.
            "env -C /tmp/x bash -c 'exec -c bash -c \"sudo ls\"'",
            "exec -cl bash -c ls",
            "echo $(cat <<EOF\nx\nEOF)\ntouch m\nEOF\n)",
            "history -s 'touch m'; fc -s",
            "compgen -C 'touch m' x",
            "complete -C 'touch m' ls",
            "jobs -x touch m",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
        let error = parse("echo $(cat <<EOF\nx\nEOF)\ntouch m\nEOF\n)").unwrap_err();
        assert!(error.contains("here-document inside"), "{error}");
        assert_eq!(texts("cat <<EOF\nx\nEOF\n"), ["cat"]);
        assert_eq!(texts("time -p ls -l"), ["ls -l"]);
        assert_eq!(texts("unset -f f; unset x"), ["unset -f f", "unset x"]);
        assert_eq!(
            texts("sleep 1 & wait -n 1 %1 -p pid"),
            ["sleep 1", "wait -n 1 %1 -p pid"]
        );
        assert_eq!(texts("hash -r"), ["hash -r"]);
        assert_eq!(texts("for f in a b; do ls $f; done"), ["ls $f"]);
        assert_eq!(texts("read -r line; echo ok"), ["read -r line", "echo ok"]);
        assert_eq!(texts("echo ${x:-y}"), ["echo ${x:-y}"]);
    }

    #[test]
    fn the_seventh_review_is_closed() {
        for line in [
            "echo {PATH}</dev/null; ls",
            "echo {HOME}>/dev/null",
            "trap -x 'touch m' EXIT",
            r#"env -S 'LC_X=C.UTF-8@\_sh\_-c\_"touch m" ls'"#,
            "env -S 'ls ${HOME}'",
            "env -S 'TZ=x\rsh\r-c\r\"id\" ls'",
            "env -S ls",
            "ls\rid",
            "ls\x0bid",
            "LC_ALL='C.UTF-8@x y' ls",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
        // After `--` the code may start with `-`: it is decided, and a
        // command named `-x` refused.
        let commands = parse("trap -- 'touch m' EXIT").unwrap();
        assert!(commands.iter().any(|c| c.name == "touch"), "{commands:?}");
        assert!(parse("trap -- '-x; touch m' EXIT").is_err());
        assert!(parse("trap -p").is_ok());
    }

    #[test]
    fn a_line_runs_a_bounded_number_of_commands() {
        let line = vec![":"; MAX_COMMANDS + 1].join("; ");
        assert!(parse(&line).unwrap_err().contains("more than"));
        assert!(parse(&vec![":"; MAX_COMMANDS].join("; ")).is_ok());
        // Keywords split by a backslash-newline still count.
        let split = "i\\\nf true; then :; fi; ".repeat(MAX_COMPOUNDS + 1);
        assert!(parse(&split).is_err());
    }

    #[test]
    fn redirections_that_write_are_listed() {
        let c = &parse("echo x > /etc/passwd 2>>/tmp/log").unwrap()[0];
        assert_eq!(c.redirects, ["/etc/passwd", "/tmp/log"]);
        assert_eq!(c.text, "echo x");
        let c = &parse("{ echo x; } > /etc/cron.d/x").unwrap()[0];
        assert_eq!(c.redirects, ["/etc/cron.d/x"]);
        let c = &parse("echo x >&/etc/passwd 2>&1").unwrap()[0];
        assert_eq!(c.redirects, ["/etc/passwd"]);
        // Found in attack: the redirections of a wrapper that runs a line
        // of its own were dropped, and wrote any file.
        for line in [
            "eval echo x > /tmp/f",
            "bash -c 'echo x' > /tmp/f",
            "sh -c 'echo x' >> /tmp/f",
            "trap true 'x\nid\n' 2> /tmp/f",
        ] {
            let commands = parse(line).unwrap();
            assert!(
                commands
                    .iter()
                    .any(|c| c.name != "$()" && c.redirects == ["/tmp/f"]),
                "{line}: {commands:?}"
            );
        }
        assert!(parse("eval '' > /tmp/f").is_err());
        assert!(parse("sh -c '' > /tmp/f").is_err());
        let c = &parse("nohup echo x").unwrap()[0];
        assert_eq!(c.redirects, ["nohup.out"]);
    }
}
