#!/bin/sh
# The image's HEALTHCHECK: `mcs check` for whichever MCS process this container runs. The process is
# the last argument of PID 1 (`mcs api`, `mcs dispatcher`, ...); a one-off command has nothing to check.
process=$(tr '\0' '\n' < /proc/1/cmdline | tail -n 1)
case "$process" in
    api|dispatcher|watchdog|notifier) exec mcs check "$process" ;;
    up) exec mcs check api ;;
    *) exit 0 ;;
esac
