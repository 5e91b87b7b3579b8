"""Starting the bot: without a token it stays off and says so; a wrong setup is named in one line."""

from __future__ import annotations

import dataclasses
import logging
import re

from bot.errors import OUR_FAULT
from bot.part import DiscordPart
from core import services
from supportbot.config import Config
from supportbot.discord_wiring import discord_part
from tests.bot.helpers import customer_mail, said
from tests.kit import eventually


def config_with(**discord) -> Config:
    return Config.model_validate({"discord": discord})


async def test_without_a_token_the_bot_is_not_started_and_the_log_says_how_to_configure_it(bot_desk, caplog):
    caplog.set_level(logging.INFO, logger="supportbot")
    assert discord_part(config_with(), bot_desk) is None
    assert [r.getMessage() for r in caplog.records if r.name == "supportbot.discord"] == [
        ("discord: no bot token configured ([discord] token or SUPPORTBOT_DISCORD_TOKEN): the bot is not "
         "started; mail, tickets and reports by mail still run")]


async def test_a_token_without_guild_or_forum_names_the_keys_to_set(bot_desk, caplog):
    assert discord_part(config_with(token="t", guild_id=5), bot_desk) is None
    assert "discord: set [discord] forum_channel_id to start the bot (it is not started)" in caplog.messages


async def test_a_complete_configuration_makes_the_part(bot_desk):
    part = discord_part(config_with(token="t", guild_id=5, forum_channel_id=6, staff_role_ids=[7]), bot_desk)
    assert isinstance(part, DiscordPart)
    assert part.bot.settings.staff_role_ids == frozenset({7})
    await part.bot.close()


async def test_a_correct_setup_reports_no_problems(world):
    assert world.bot.setup_problems() == []


async def test_a_wrong_forum_or_alerts_channel_is_named_with_the_key_to_fix(world):
    world.bot.settings = dataclasses.replace(world.settings, forum_channel_id=world.lobby.id, alerts_channel_id=42,
                                             staff_role_ids=frozenset(), manager_role_ids=frozenset())
    problems = world.bot.setup_problems()
    assert problems == [
        f"forum channel {world.lobby.id} not found in 'Support HQ' (or not a forum): fix [discord] forum_channel_id",
        "alerts channel 42 not found: fix [discord] alerts_channel_id",
        "no staff or manager role configured: nobody can use the commands; set [discord] staff_role_ids",
    ]


async def test_a_bug_gives_the_member_a_short_apology_and_is_logged_with_its_traceback(world, monkeypatch,
                                                                                         no_logged_errors):
    async def broken(*args, **kwargs):
        raise RuntimeError("database exploded")

    monkeypatch.setattr(services, "claim", broken)
    world.tolerated = (RuntimeError,)
    number = await customer_mail(world.desk)
    await world.project()
    result = await world.alice.slash(world.post(number), "claim")
    assert result.ephemeral and said(result) == OUR_FAULT
    assert "database exploded" not in said(result)
    logged = [r for r in no_logged_errors.records if r.name == "bot.errors"]
    assert [r.getMessage() for r in logged] == ["interaction /claim failed"]
    assert logged[0].exc_info and "database exploded" in str(logged[0].exc_info[1])
    no_logged_errors.records.clear()  # expected here; the fixture fails any other test that logs one


async def test_missing_permissions_in_a_channel_are_named_with_the_channel(world):
    import discord

    muted = world.guild.create_text_channel("muted-alerts", overwrites={
        world.bot.user: discord.PermissionOverwrite(send_messages=False)})
    await world.env.settle()
    world.bot.settings = dataclasses.replace(world.settings, alerts_channel_id=muted.id)
    assert world.bot.setup_problems() == [
        "the bot lacks Send Messages in #muted-alerts: grant them to its role there"]


async def test_an_unreachable_discord_does_not_stop_the_desk_and_is_retried(bot_desk, caplog, unused_tcp_port):
    import asyncio

    import discord

    saved = discord.http.Route.BASE
    discord.http.Route.BASE = f"http://127.0.0.1:{unused_tcp_port}/api/v10"  # nothing listens there
    try:
        part = discord_part(config_with(token="t", guild_id=5, forum_channel_id=6), bot_desk)
        assert part is not None
        await asyncio.wait_for(part.start(), 1)  # returns at once
        await eventually(lambda: [m for m in caplog.messages if "cannot reach Discord" in m])
        await asyncio.wait_for(part.stop(), 5)
    finally:
        discord.http.Route.BASE = saved
    [line] = [m for m in caplog.messages if m.startswith("discord: cannot reach Discord (ClientConnectorError)")]
    assert re.fullmatch(r".*; trying again in [4-6] s", line), line  # 5 s, give or take the jitter
