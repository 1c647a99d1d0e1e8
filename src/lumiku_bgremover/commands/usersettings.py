"""`lumiku-bgremover settings set|show`: a user's integration settings, on the database."""

from __future__ import annotations

import argparse

from lumiku_bgremover.commands.common import (
    EXIT_OK,
    EXIT_USAGE,
    database,
    report,
    request_of,
    rows,
    show,
)
from lumiku_bgremover.contracts import (
    ContractError,
    IntegrationSetting,
    SettingsGetRequest,
    SettingsReply,
    SettingsSetRequest,
)
from lumiku_bgremover.contracts.common import App, OutputFormat, Tier
from lumiku_bgremover.integrations.preferences import get_settings, set_setting
from lumiku_bgremover.settings import Settings

__all__ = ["add_arguments", "format_settings", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`set --user --app (--on|--off) [--tier] [--format] [--then-upscale]`, `show --user`."""
    actions = parser.add_subparsers(dest="action", required=True)
    put = actions.add_parser("set", help="turn an app's automatic removal on or off")
    put.add_argument("--user", required=True, help="user id")
    put.add_argument("--app", required=True, choices=[a.value for a in App])
    switch = put.add_mutually_exclusive_group(required=True)
    switch.add_argument("--on", dest="enabled", action="store_true", help="remove automatically")
    switch.add_argument("--off", dest="enabled", action="store_false", help="do nothing")
    put.add_argument("--tier", choices=[t.value for t in Tier], default=Tier.STANDARD.value)
    put.add_argument("--format", choices=[f.value for f in OutputFormat], default="png")
    put.add_argument("--then-upscale", type=int, choices=[2, 4], help="then upscale by 2 or 4")
    put.add_argument("--json", action="store_true", help="print the reply as JSON")
    get = actions.add_parser("show", help="a user's settings for every app")
    get.add_argument("--user", required=True, help="user id")
    get.add_argument("--json", action="store_true", help="print the reply as JSON")


def format_settings(reply: SettingsReply) -> str:
    """One row per app: on/off, tier, format, next step."""

    def line(setting: IntegrationSetting) -> str:
        state = "on " if setting.enabled else "off"
        then = f", then upscale x{setting.then_upscale.scale}" if setting.then_upscale else ""
        return f"{state} {setting.tier.value}, {setting.options.format.value}{then}"

    return rows([("user", reply.user_id), *((s.app.value, line(s)) for s in reply.settings)])


def _request(args: argparse.Namespace) -> SettingsGetRequest | SettingsSetRequest:
    if args.action == "show":
        return request_of(SettingsGetRequest, user_id=args.user)
    then = None if args.then_upscale is None else {"scale": args.then_upscale}
    setting = {"app": args.app, "enabled": args.enabled, "tier": args.tier,
               "options": {"format": args.format}, "then_upscale": then}  # fmt: skip
    return request_of(SettingsSetRequest, user_id=args.user, setting=setting)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Run `settings set` or `settings show`; 2 for arguments breaking the contract."""
    try:
        request = _request(args)
    except ContractError as error:
        report(error)
        return EXIT_USAGE
    async with database(settings) as conn:
        if isinstance(request, SettingsSetRequest):
            reply = await set_setting(conn, request)
        else:
            reply = await get_settings(conn, request)
    show(reply, format_settings(reply), as_json=args.json)
    return EXIT_OK
