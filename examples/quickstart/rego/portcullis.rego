# The quickstart's policies in Rego: the same decisions as the Cedar files in
# ../policies. Each rule adds its id to `permit` or `forbid`; a forbid wins;
# what nothing permits is denied. A forbid named in `approvals` holds the
# statement for a member of that group to approve instead (when a permit
# applies).
package portcullis

import rego.v1

# Who may open a session to the demo database.
permit contains "eng-connect" if {
	input.action == "connect"
	"eng" in input.principal.groups
	input.target.name == "demo"
}

permit contains "dba-connect" if {
	input.action == "connect"
	"dba" in input.principal.groups
	input.target.name == "demo"
}

# Engineers read and write data, and may change the schema once a DBA
# approves.
permit contains "eng-read-write" if {
	input.action == "query"
	"eng" in input.principal.groups
	input.target.name == "demo"
	input.context.statement.kind in {"select", "insert", "update", "delete", "merge", "copy", "call", "set", "transaction", "utility", "ddl"}
}

forbid contains "eng-ddl-needs-a-dba" if {
	input.action == "query"
	"eng" in input.principal.groups
	not "dba" in input.principal.groups
	input.target.name == "demo"
	"ddl" in input.context.statement.kinds
}

# Who may lift which forbid.
approvals := {
	"no-unbounded-writes": "dba",
	"eng-ddl-needs-a-dba": "dba",
	"service-changes-need-ops": "ops",
}

# DBAs may also change the schema and privileges.
permit contains "dba-ddl-dcl" if {
	input.action == "query"
	"dba" in input.principal.groups
	input.target.name == "demo"
	input.context.statement.kind in {"ddl", "dcl"}
}

# Guardrails that hold for everyone.
forbid contains "no-unbounded-writes" if {
	input.action == "query"
	not input.context.statement.has_where
}

forbid contains "no-drop-database" if {
	input.action == "query"
	input.context.statement.command == "DROP DATABASE"
}

forbid contains "no-copy-program" if {
	input.action == "query"
	startswith(input.context.statement.command, "COPY ")
	endswith(input.context.statement.command, " PROGRAM")
}

forbid contains "no-alter-system" if {
	input.action == "query"
	input.context.statement.command == "ALTER SYSTEM"
}

forbid contains "no-role-changes" if {
	input.action == "query"
	input.context.statement.command in {"CREATE ROLE", "ALTER ROLE", "DROP ROLE"}
}

reasons := {
	"no-unbounded-writes": "UPDATE and DELETE need a WHERE clause",
	"eng-ddl-needs-a-dba": "schema changes need a DBA's approval",
	"no-drop-database": "DROP DATABASE is not allowed through the gateway",
	"no-copy-program": "COPY ... PROGRAM runs commands on the database host",
	"no-alter-system": "ALTER SYSTEM changes the server's configuration",
	"no-role-changes": "creating or altering roles is not allowed through the gateway",
	"service-changes-need-ops": "changing a service or the system needs a member of ops to approve",
	"no-recursive-delete-of-root": "recursive deletes of / are refused, and rm of paths known only when it runs",
	"no-forwarding": "port forwarding to demo-ssh is not allowed",
	"read-only-programs-stay-read-only": "this option acts on another host or changes the system",
	"systemctl-without-a-pager": "systemctl pages through less, whose `!` runs a shell: add --no-pager",
}

# Who sees masked values in clear (masks.toml). Everyone else gets them masked.
permit contains "pii-readers-unmask" if {
	input.action == "unmask"
	"pii-readers" in input.principal.groups
	input.target.name == "demo"
}

# SSH to `demo-ssh`: as ../policies/ssh.cedar. Engineers get a shell and a
# list of commands; service changes wait for ops; recursive deletes of / and
# port forwarding are refused.
permit contains "eng-ssh-connect" if {
	input.action == "connect"
	"eng" in input.principal.groups
	input.target.name == "demo-ssh"
}

permit contains "eng-ssh-shell" if {
	input.action == "shell"
	"eng" in input.principal.groups
	input.target.name == "demo-ssh"
}

permit contains "eng-ssh-commands" if {
	input.action == "exec"
	"eng" in input.principal.groups
	input.target.name == "demo-ssh"
	input.context.command.program in {
		"ls", "cat", "head", "tail", "grep", "wc", "stat", "df", "du", "free",
		"uptime", "whoami", "id", "hostname", "uname", "date", "echo", "true",
		"ps", "systemctl",
	}
	count(input.context.command.redirects) == 0
}

permit contains "eng-sftp-read" if {
	input.action == "sftp"
	"eng" in input.principal.groups
	input.target.name == "demo-ssh"
	input.context.sftp.operation in {"read", "list", "stat", "readlink"}
}

permit contains "eng-sftp-write-tmp" if {
	input.action == "sftp"
	"eng" in input.principal.groups
	input.target.name == "demo-ssh"
	startswith(input.context.sftp.path, "/tmp/")
	not moves_out_of_tmp
}

moves_out_of_tmp if {
	to := input.context.sftp.to
	not startswith(to, "/tmp/")
}

forbid contains "service-changes-need-ops" if {
	input.action == "exec"
	input.context.command.name == "systemctl"
	not systemctl_reads
}

systemctl_reads if {
	some verb in ["status", "show", "cat ", "list-", "is-"]
	startswith(input.context.command.text, concat("", ["systemctl ", verb]))
}

# On a terminal systemctl pages through `less`, whose `!` runs a shell.
forbid contains "systemctl-without-a-pager" if {
	input.action == "exec"
	input.context.command.name == "systemctl"
	not "--no-pager" in input.context.command.args
	some verb in ["status", "show", "cat ", "list-"]
	startswith(input.context.command.text, concat("", ["systemctl ", verb]))
}

forbid contains "no-recursive-delete-of-root" if {
	input.action == "exec"
	input.context.command.name == "rm"
	some arg in input.context.command.args
	arg in {"/", "/*", "//", "/.", "/./", "/..", "--no-preserve-root"}
}

# Globs, braces and variables expand on the target: what they name is known
# only there.
forbid contains "no-recursive-delete-of-root" if {
	input.action == "exec"
	input.context.command.name == "rm"
	input.context.command.dynamic
}

forbid contains "no-forwarding" if {
	input.action == "forward"
	input.target.name == "demo-ssh"
}

# Read-only programs with options that act elsewhere or change the system:
# `systemctl -H host` runs ssh to another host (`-M` enters a container;
# long options may be abbreviated), `date -s` sets the clock, `hostname
# NAME` renames the machine. `date` takes no option but a few that only
# read; and none of the three takes a word known only when it runs.
forbid contains "read-only-programs-stay-read-only" if {
	input.action == "exec"
	acts_elsewhere
}

acts_elsewhere if {
	input.context.command.name in {"systemctl", "date", "hostname"}
	input.context.command.dynamic
}

# As the Cedar policy reads it: a word starting with `-` followed anywhere
# later by H or M, or one of the long options, anywhere in the line.
acts_elsewhere if {
	input.context.command.name == "systemctl"
	regex.match(`(?s) -.*[HM]| --(ho|ma|ro|im)`, input.context.command.text)
}

acts_elsewhere if {
	input.context.command.name == "date"
	not input.context.command.text in {
		"date", "date -u", "date -R", "date -I", "date --utc", "date --rfc-email",
		"date --iso-8601",
	}
	not date_format_only
}

date_format_only if {
	regex.match(`^date \+[^ ]*$`, input.context.command.text)
}

acts_elsewhere if {
	input.context.command.name == "hostname"
	some arg in input.context.command.args
	not arg in {
		"-f", "--fqdn", "-s", "--short", "-i", "--ip-address", "-I",
		"--all-ip-addresses", "-d", "--domain", "-A", "--all-fqdns",
	}
}
