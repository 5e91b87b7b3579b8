"""A small fake Discord on loopback: REST under /api/v10 and a websocket gateway, for end-to-end tests.

discord.py connects to it for real (HTTP and websocket), so the transport, the gateway protocol
and our wiring in `supportbot run` are exercised. It models only what the bot uses: one guild,
a forum with tags and posts, text channels, messages, slash-command interactions. Any other route
answers 404 and is recorded in `unknown`, so a test can fail loudly.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import discord
import yarl
from aiohttp import WSMsgType, web

ADMIN = str(8)  # the administrator permission bit
ISO_NOW = "2026-03-02T09:00:00+00:00"


@dataclass
class Recorded:
    at: float  # time.perf_counter() when the request arrived
    method: str
    path: str
    body: dict[str, Any]


@dataclass
class Answer:
    """What the bot answered one interaction with."""

    type: int = 0
    data: dict[str, Any] = field(default_factory=dict)
    followups: list[dict[str, Any]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def text(self) -> str:
        return (self.followups[-1] if self.followups else self.data).get("content", "")


class FakeDiscord:
    def __init__(self) -> None:
        self._ids = itertools.count(1_100_000_000_000_000_000)
        self.app_id, self.guild_id = self.snowflake(), self.snowflake()
        self.bot_user = _user(self.snowflake(), "supportbot", bot=True)
        self.roles: dict[int, dict[str, Any]] = {self.guild_id: _role(self.guild_id, "@everyone", "0", 0)}
        self.members: dict[int, dict[str, Any]] = {}
        self.channels: dict[int, dict[str, Any]] = {}
        self.messages: dict[int, list[dict[str, Any]]] = {}
        self.commands: list[dict[str, Any]] = []
        self.requests: list[Recorded] = []
        self.unknown: list[str] = []
        self.answers: dict[int, Answer] = {}
        self.listeners: list[Callable[[Recorded], None]] = []
        self._ws: web.WebSocketResponse | None = None
        self._seq = 0
        self.identified = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0
        bot_role = self.add_role("bot", ADMIN)
        self.add_member(self.bot_user, [bot_role])

    def snowflake(self) -> int:
        return next(self._ids)

    # -- arranging the guild -----------------------------------------------------------------

    def add_role(self, name: str, permissions: str = "0") -> int:
        role_id = self.snowflake()
        self.roles[role_id] = _role(role_id, name, permissions, len(self.roles))
        return role_id

    def add_member(self, user: dict[str, Any], roles: list[int]) -> dict[str, Any]:
        member = {"user": user, "roles": [str(r) for r in roles], "joined_at": ISO_NOW, "deaf": False,
                  "mute": False, "flags": 0, "nick": None, "avatar": None}
        self.members[int(user["id"])] = member
        return member

    def add_user(self, name: str, roles: list[int]) -> int:
        user = _user(self.snowflake(), name)
        self.add_member(user, roles)
        return int(user["id"])

    def add_channel(self, name: str, type_: int) -> int:
        channel_id = self.snowflake()
        channel: dict[str, Any] = {"id": str(channel_id), "type": type_, "guild_id": str(self.guild_id),
                                   "name": name, "position": len(self.channels), "permission_overwrites": [],
                                   "nsfw": False, "parent_id": None, "rate_limit_per_user": 0, "topic": None,
                                   "last_message_id": None, "flags": 0}
        if type_ == 15:
            channel.update(available_tags=[], default_reaction_emoji=None, default_sort_order=None,
                           default_forum_layout=0, default_thread_rate_limit_per_user=0)
        self.channels[channel_id] = channel
        self.messages[channel_id] = []
        return channel_id

    def threads_of(self, forum_id: int) -> list[dict[str, Any]]:
        return [c for c in self.channels.values() if c["type"] == 11 and c["parent_id"] == str(forum_id)]

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=30 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._saved = (discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY)
        discord.http.Route.BASE = f"http://127.0.0.1:{self.port}/api/v10"
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(f"ws://127.0.0.1:{self.port}/gateway")

    async def stop(self) -> None:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._saved
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- acting as a member ------------------------------------------------------------------

    async def slash(self, user_id: int, channel_id: int, name: str, timeout: float = 10.0,
                    **options: Any) -> Answer:
        """A member runs a slash command; returns once the bot has answered it."""
        command = next(c for c in self.commands if c["name"] == name)
        interaction_id = self.snowflake()
        answer = self.answers[interaction_id] = Answer()
        member = {**self.members[user_id], "permissions": ADMIN}
        channel = self.channels[channel_id]
        await self.dispatch("INTERACTION_CREATE", {
            "id": str(interaction_id), "application_id": str(self.app_id), "type": 2, "token": f"tok{interaction_id}",
            "version": 1, "guild_id": str(self.guild_id), "channel_id": str(channel_id),
            "channel": {**channel, "permissions": ADMIN}, "member": member, "locale": "en-US",
            "guild_locale": "en-US", "app_permissions": ADMIN, "entitlements": [], "context": 0,
            "authorizing_integration_owners": {}, "attachment_size_limit": 26214400,
            "data": {"id": command["id"], "name": name, "type": 1, "guild_id": str(self.guild_id),
                     "options": [{"name": k, "type": _option_type(command, k), "value": v}
                                 for k, v in options.items()]},
        })
        await asyncio.wait_for(answer.done.wait(), timeout)
        return answer

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        assert self._ws is not None, "the bot is not connected"
        self._seq += 1
        await self._ws.send_str(json.dumps({"op": 0, "t": event, "s": self._seq, "d": data}))

    # -- gateway ---------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}}))
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                break
            payload = json.loads(msg.data)
            op = payload["op"]
            if op == 1:
                await ws.send_str(json.dumps({"op": 11}))
            elif op == 2:
                await self._identify()
            elif op == 8:
                await self.dispatch("GUILD_MEMBERS_CHUNK", {"guild_id": str(self.guild_id), "members": list(
                    self.members.values()), "chunk_index": 0, "chunk_count": 1, "nonce": payload["d"].get("nonce")})
        return ws

    async def _identify(self) -> None:
        await self.dispatch("READY", {
            "v": 10, "user": self.bot_user, "guilds": [{"id": str(self.guild_id), "unavailable": True}],
            "session_id": "fake-session", "resume_gateway_url": f"ws://127.0.0.1:{self.port}/gateway",
            "application": {"id": str(self.app_id), "flags": 0}})
        await self.dispatch("GUILD_CREATE", self._guild())
        self.identified.set()

    def _guild(self) -> dict[str, Any]:
        return {
            "id": str(self.guild_id), "name": "Support HQ", "icon": None, "owner_id": "1",
            "roles": list(self.roles.values()), "emojis": [], "stickers": [], "features": [],
            "member_count": len(self.members), "members": list(self.members.values()),
            "channels": [c for c in self.channels.values() if c["type"] != 11],
            "threads": [c for c in self.channels.values() if c["type"] == 11], "large": False,
            "unavailable": False, "premium_tier": 0, "mfa_level": 0, "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "system_channel_id": None,
            "preferred_locale": "en-US", "nsfw_level": 0, "voice_states": [], "presences": [],
            "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [],
        }

    # -- REST ------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        body = await _body(request)
        record = Recorded(time.perf_counter(), request.method, path, body)
        self.requests.append(record)
        for listener in self.listeners:
            listener(record)
        parts = path.strip("/").split("/")
        handler = ROUTES.get((request.method, _shape(parts)))
        if handler is None:
            self.unknown.append(f"{request.method} {path}")
            return _json({"message": "404: Not Found", "code": 0}, 404)
        return await handler(self, parts, body)

    async def _me(self, parts: list[str], body: dict[str, Any]) -> web.Response:
        return _json(self.bot_user)

    async def _application(self, parts: list[str], body: dict[str, Any]) -> web.Response:
        return _json({"id": str(self.app_id), "name": "supportbot", "icon": None, "description": "",
                      "bot_public": False, "bot_require_code_grant": False, "verify_key": "0", "flags": 0,
                      "owner": _user(1, "owner"), "team": None, "summary": ""})

    async def _sync(self, parts: list[str], body: Any) -> web.Response:
        self.commands = [{**c, "id": str(self.snowflake()), "application_id": str(self.app_id),
                          "version": "1", "guild_id": str(self.guild_id)} for c in body["_list"]]
        return _json(self.commands)

    async def _get_channel(self, parts: list[str], body: dict[str, Any]) -> web.Response:
        channel = self.channels.get(int(parts[1]))
        return _json(channel) if channel else _json({"message": "Unknown Channel", "code": 10003}, 404)

    async def _patch_channel(self, parts: list[str], body: dict[str, Any]) -> web.Response:
        channel = self.channels[int(parts[1])]
        if "available_tags" in body:
            channel["available_tags"] = [{**t, "id": str(t.get("id") or self.snowflake()), "moderated":
                                          t.get("moderated", False), "emoji_id": None, "emoji_name": None}
                                         for t in body["available_tags"]]
        if "applied_tags" in body:
            channel["applied_tags"] = [str(t) for t in body["applied_tags"]]
        for key in ("archived", "locked"):
            if key in body:
                channel["thread_metadata"][key] = body[key]
        await self.dispatch("THREAD_UPDATE" if channel["type"] == 11 else "CHANNEL_UPDATE", channel)
        return _json(channel)

    async def _create_thread(self, parts: list[str], body: dict[str, Any]) -> web.Response:
        forum_id, thread_id = int(parts[1]), self.snowflake()
        thread = {"id": str(thread_id), "type": 11, "guild_id": str(self.guild_id), "parent_id": str(forum_id),
                  "owner_id": self.bot_user["id"], "name": body["name"], "last_message_id": None,
                  "rate_limit_per_user": 0, "message_count": 1, "member_count": 1, "flags": 0,
                  "total_message_sent": 1, "applied_tags": [str(t) for t in body.get("applied_tags", [])],
                  "thread_metadata": {"archived": False, "locked": False, "archive_timestamp": ISO_NOW,
                                      "auto_archive_duration": body.get("auto_archive_duration", 10080)}}
        self.channels[thread_id] = thread
        self.messages[thread_id] = []
        message = self._message(thread_id, body.get("message", {}))
        message["id"] = str(thread_id)  # a forum post's starter message has the thread's id
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return _json({**thread, "message": message})

    async def _post_message(self, parts: list[str], body: dict[str, Any]) -> web.Response:
        return _json(self._message(int(parts[1]), body))

    async def _edit_message(self, parts: list[str], body: dict[str, Any]) -> web.Response:
        channel_id, message_id = int(parts[1]), int(parts[3])
        for message in self.messages.get(channel_id, []):
            if int(message["id"]) == message_id or (message is self.messages[channel_id][0]
                                                    and channel_id == message_id):
                message.update({k: v for k, v in body.items() if k in ("content", "embeds", "components")})
                return _json(message)
        return _json({"message": "Unknown Message", "code": 10008}, 404)

    async def _callback(self, parts: list[str], body: dict[str, Any]) -> web.Response:
        interaction_id = int(parts[1])
        answer = self.answers[interaction_id]
        answer.type, answer.data = body["type"], body.get("data") or {}
        if body["type"] != 5:  # anything but a defer is the final answer
            answer.done.set()
        return _json({"interaction": {"id": str(interaction_id), "type": 2}, "resource": {"type": body["type"]}})

    async def _followup(self, parts: list[str], body: dict[str, Any]) -> web.Response:
        interaction_id = int(parts[2].removeprefix("tok"))
        answer = self.answers[interaction_id]
        answer.followups.append(body)
        answer.done.set()
        return _json(self._message(0, body))

    def _message(self, channel_id: int, body: dict[str, Any]) -> dict[str, Any]:
        message = {"id": str(self.snowflake()), "channel_id": str(channel_id), "author": self.bot_user,
                   "content": body.get("content") or "", "timestamp": datetime.now(UTC).isoformat(),
                   "edited_timestamp": None, "tts": False, "mention_everyone": False, "mentions": [],
                   "mention_roles": [], "attachments": [{"id": str(self.snowflake()), "filename": f.get("filename"),
                                                         "size": 0, "url": "http://x/", "proxy_url": "http://x/"}
                                                        for f in body.get("attachments", [])],
                   "embeds": body.get("embeds", []), "pinned": False, "type": 0, "flags": body.get("flags", 0),
                   "components": body.get("components", []), "allowed_mentions": body.get("allowed_mentions")}
        self.messages.setdefault(channel_id, []).append(message)
        return message


ROUTES: dict[tuple[str, tuple[str, ...]], Any] = {
    ("GET", ("users", "@me")): FakeDiscord._me,
    ("GET", ("oauth2", "applications", "@me")): FakeDiscord._application,
    ("PUT", ("applications", "*", "guilds", "*", "commands")): FakeDiscord._sync,
    ("GET", ("channels", "*")): FakeDiscord._get_channel,
    ("PATCH", ("channels", "*")): FakeDiscord._patch_channel,
    ("POST", ("channels", "*", "threads")): FakeDiscord._create_thread,
    ("POST", ("channels", "*", "messages")): FakeDiscord._post_message,
    ("PATCH", ("channels", "*", "messages", "*")): FakeDiscord._edit_message,
    ("POST", ("interactions", "*", "*", "callback")): FakeDiscord._callback,
    ("POST", ("webhooks", "*", "*")): FakeDiscord._followup,
}


def _shape(parts: list[str]) -> tuple[str, ...]:
    return tuple("*" if p.isdigit() or p.startswith("tok") else p for p in parts)


async def _body(request: web.Request) -> Any:
    if request.content_type == "multipart/form-data":
        form = await request.post()
        payload = json.loads(str(form.get("payload_json", "{}")))
        return payload
    raw = await request.read()
    if not raw:
        return {}
    data = json.loads(raw)
    return {"_list": data} if isinstance(data, list) else data


def _json(data: Any, status: int = 200) -> web.Response:
    # Exactly "application/json": discord.py parses JSON only then (aiohttp would add a charset).
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


def _user(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {"id": str(user_id), "username": name, "discriminator": "0", "global_name": name, "avatar": None,
            "bot": bot, "public_flags": 0}


def _role(role_id: int, name: str, permissions: str, position: int) -> dict[str, Any]:
    return {"id": str(role_id), "name": name, "color": 0, "hoist": False, "position": position,
            "permissions": permissions, "managed": False, "mentionable": False, "flags": 0}


def _option_type(command: dict[str, Any], name: str) -> int:
    return next(o["type"] for o in command.get("options", []) if o["name"] == name)


__all__ = ["Answer", "FakeDiscord", "Recorded", "suppress"]
