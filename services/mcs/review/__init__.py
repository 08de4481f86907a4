"""`mcs review`: pack a code tree, fan it out as an `mcs-review` task with `aggregate: "consensus"`, and
turn the merged result into a self-contained HTML report (plus JSON).

- `pack`: the payload format (files and a prompt) and its safe unpacking on the agent side;
- `analyzers`: offline reviewer agents (ruff, pyflakes, bandit, vulture, pylint) whose findings use
  shared titles, so the same problem found by different tools merges;
- `report`: the HTML report;
- `launcher`: `mcs review agents`, one agent process per analyzer.
"""
