# shellcheck shell=sh
# The in-place restore's last word.

say ok
