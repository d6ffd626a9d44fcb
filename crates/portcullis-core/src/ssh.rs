//! What an SSH action does, as the policy sees it.

/// One simple command of an SSH command line, after looking through the
/// wrappers that only run another command (`sudo`, `env`, `sh -c`, ...).
///
/// A command line is decided command by command: it runs only when every
/// command in it is allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Command {
    /// The program as written (`rm`, `/bin/rm`), after its wrappers. A word
    /// whose value is known only when it runs (`$CMD`, `{r,}m`, `r?`) is
    /// kept as written, so that it matches no program name.
    pub program: String,
    /// The program's file name (`rm` for `/bin/rm`).
    pub name: String,
    pub args: Vec<String>,
    /// The program and its arguments, joined by spaces: for `like`
    /// patterns such as `"systemctl restart *"`.
    pub text: String,
    /// The whole command line the client sent. In the audit log, only the
    /// first command of a line carries it (the others would repeat it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub line: String,
    /// The wrappers looked through, outermost first: `sudo`, `env`,
    /// `sh -c`, `bash -c`, `nohup`, `timeout`, ...
    pub wrappers: Vec<String>,
    /// A word of this command is known only when it runs (a parameter,
    /// command substitution, glob or brace expansion).
    pub dynamic: bool,
    /// Files this command's redirections write (`>`, `>>`).
    pub redirects: Vec<String>,
}

/// The program name a command substitution (`$( )`, backquotes, `<( )`) is
/// decided as: a policy allows substitution only by naming it.
pub const SUBSTITUTION: &str = "$()";

/// Port forwarding through an SSH session.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Forward {
    /// `local` (`ssh -L`, `ssh -D`: the target connects to `host:port`) or
    /// `remote` (`ssh -R`: the target listens on `host:port`).
    pub direction: String,
    pub host: String,
    pub port: u32,
}

/// One SFTP operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SftpOp {
    /// `read`, `write` (opening a file for it), `list`, `stat`, `remove`,
    /// `rename`, `mkdir`, `rmdir`, `setstat`, `symlink`, `readlink`.
    pub operation: String,
    pub path: String,
    /// The new path of a `rename`, the link of a `symlink`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}
