# shellcheck shell=sh
# shellcheck disable=SC2034  # a fragment: what it sets is read by a later piece or the EXIT trap (prelude: finish)
# In place, after the swap: the backup of the replaced database reports its errors as backup_error
# (the restore itself has succeeded by then).

failkey=backup_error
phase "backing up the replaced database"
