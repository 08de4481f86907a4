"""Maintenance services the watchdog runs: each a small class with its own interval, its own test and its
own metric (River's internal/maintenance, Oban's plugins). Each takes the time as an argument (`now=`)."""
