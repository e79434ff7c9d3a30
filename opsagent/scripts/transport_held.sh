# shellcheck shell=sh
# A held command (transport.Remote.hold): started early, so that the exec, the login shell and sudo are paid while
# the client does other work, then held until the client writes one line "go" on stdin; only then does it run "$@"
# (argv, never parsed), whose stdin is the rest of ours.  Any other line, or EOF (the client closed the channel or
# went away), and it exits 0 having run nothing.  `read` takes no byte beyond its line from a pipe.
IFS= read -r go || exit 0
[ "$go" = go ] || exit 0
exec "$@"
