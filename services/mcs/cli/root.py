"""The `mcs` command's root group; each command group lives in its own module of this package."""

from __future__ import annotations

import importlib

import click

from mcs.cli.common import McsGroup


class RootGroup(McsGroup):
    """The root group loads the command modules (`mcs.cli.COMMAND_MODULES`) only when a command it has
    not registered yet is asked for, or the whole list is."""

    def _load_all(self) -> None:
        from mcs.cli import COMMAND_MODULES

        for name in COMMAND_MODULES:
            importlib.import_module(f"mcs.cli.{name}")

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            self._load_all()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_all()
        return super().list_commands(ctx)


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mcs")
def main() -> None:
    """MCS, the Mesh Coordination Server: tasks, signed webhooks and shared memory for a mesh of AI agents.

    Server settings come from MCS_* environment variables (MCS_DB, MCS_HOST, MCS_PORT, MCS_ADMIN_TOKEN, ...;
    see the README). Client commands find the mesh and sign in with, first to last: their options (--url,
    --profile), the environment (MCS_URL; MCS_ADMIN_TOKEN, or MCS_AGENT_ID + MCS_AGENT_SECRET), the config
    file's profile (~/.config/mcs/config.toml, which `mcs up` writes; MCS_PROFILE picks one), and the
    defaults (http://127.0.0.1:8080 and ./data/admin-token).

    Shell completion: eval "$(_MCS_COMPLETE=bash_source mcs)" (zsh_source, fish_source).
    """
