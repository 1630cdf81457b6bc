"""Every Redis key the gateway uses, in one place.

All keys of one session share the hash tag `{G}` (G = gateway session id), so Redis Cluster
keeps a session in one slot and multi-key scripts stay legal.

    {prefix}:{G}:session        hash   the session record
    {prefix}:{G}:streams        hash   stream id -> JSON of its kind and initial pending ids
    {prefix}:{G}:x:{S}          stream one entry per SSE event, entry id `N-0`
    {prefix}:{G}:m:{S}          hash   stream meta: kind, seq, pending, upstream id, done
    {prefix}:{G}:lease:{S}      string replica id of the pump (expires with the stream)
    {prefix}:{G}:n:{S}          shard channel: the pump announces each new seq ('r' = lease released)
    {prefix}:{G}:reinit         string lock while a new upstream session is being established
    {prefix}:{G}:ba:{S}         list   a 2025 client's answers to bridged input requests of stream S
    {prefix}:{G}:bc:{S}         set    ids of bridged requests on stream S the client cancelled
    {prefix}:{G}:bsubs          set    resource URIs a bridged 2025 client subscribed to (its listen filter)
    {prefix}:{G}:blog           string the log level a bridged 2025 client set (sent in each request's _meta)
    {prefix}:{G}:reqs           hash   request-id claims: `r:<id>` -> claim JSON, `o:<n>` -> `r:<id>`, `#` count
    {prefix}:idem:{H}           string Idempotency-Key record, H = hash of (principal, key)
    {prefix}:replica:{R}        string liveness of replica R (short PX, renewed by its heartbeat)
    {prefix}:presence:{R}       shard channel replica R subscribes to while its process lives
    {prefix}:limits:{kind}:{W}  string/zset per-client limits (W = principal or client IP)
    {prefix}:{quota:Q:K}        string GCRA bucket of quota rule Q (digest of its text) for key value K
    {prefix}:audit              stream the audit trail (capped), `mcp-gateway audit` reads it
    {prefix}:{legacy:B}:bridge  hash   legacy HTTP+SSE bridge B: pool, principal, gateway session
    {prefix}:{legacy:B}:out     stream messages waiting for bridge B's `/sse` connection
    {prefix}:{legacy:B}:n       shard channel: a message was added to the outbox
    {prefix}:{task:T}:task      hash   gateway-served task T (2026-07-28 tasks extension)
    {prefix}:{task:T}:route     hash   task T created by an upstream itself: instance, principal, pool
    {prefix}:{cache:P:F}:gen    string generation of cache family F of pool P (bumped by notifications)
    {prefix}:{cache:P:F}:e:{D}  hash   one cached answer (D = digest of method, params, partition)
    {prefix}:era:{U}            hash   era of upstream instance U (`2025`/`2026`), its initialize result
    {prefix}:{bridge:D}:held    string an upstream session the era bridge holds (D = digest of key)
    {prefix}:bridge:held:{U}    zset   the bridge's upstream sessions on instance U, by last use
    {prefix}:bridge:secret      string the key sealing the bridge's requestState (made at first start)
    {prefix}:bridge:rounds      zset   open rounds of bridged multi round-trip calls, by expiry
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_GLOB = re.compile(r"([*?\[\]\\])")


def _literal(text: str) -> str:
    """`text` as a SCAN MATCH pattern that matches only itself."""
    return _GLOB.sub(r"\\\1", text)


@dataclass(frozen=True)
class Keys:
    prefix: str = "mcpgw"

    def _session_tag(self, session: str) -> str:
        return f"{self.prefix}:{{{session}}}"

    def session(self, session: str) -> str:
        return f"{self._session_tag(session)}:session"

    def streams(self, session: str) -> str:
        return f"{self._session_tag(session)}:streams"

    def events(self, session: str, stream: str) -> str:
        return f"{self._session_tag(session)}:x:{stream}"

    def meta(self, session: str, stream: str) -> str:
        return f"{self._session_tag(session)}:m:{stream}"

    def lease(self, session: str, stream: str) -> str:
        return f"{self._session_tag(session)}:lease:{stream}"

    def notify(self, session: str, stream: str) -> str:
        """The shard channel of one stream (same slot as its keys: SPUBLISH from the append script)."""
        return f"{self._session_tag(session)}:n:{stream}"

    def bridge_answers(self, session: str, stream: str) -> str:
        """A 2025 client's answers to the input requests a 2026-07-28 upstream asked on stream S."""
        return f"{self._session_tag(session)}:ba:{stream}"

    def bridge_cancelled(self, session: str, stream: str) -> str:
        """Ids of the bridged requests answered on stream S that the client cancelled."""
        return f"{self._session_tag(session)}:bc:{stream}"

    def bridge_subscriptions(self, session: str) -> str:
        """The resource URIs a bridged 2025 client subscribed to (the filter of its listen stream)."""
        return f"{self._session_tag(session)}:bsubs"

    def bridge_log_level(self, session: str) -> str:
        """The level of a bridged 2025 client's logging/setLevel (2026-07-28 sends it per request)."""
        return f"{self._session_tag(session)}:blog"

    def replica(self, replica: str) -> str:
        """Liveness of one replica: exists while its heartbeat runs (paused or dead: it expires)."""
        return f"{self.prefix}:replica:{replica}"

    def presence(self, replica: str) -> str:
        """Shard channel a replica subscribes to: no subscriber the moment its process dies."""
        return f"{self.prefix}:presence:{replica}"

    def replica_pattern(self) -> str:
        """SCAN pattern of every replica liveness key (tooling); the prefix's glob characters are escaped."""
        return f"{_literal(self.prefix)}:replica:*"

    def reinit_lock(self, session: str) -> str:
        return f"{self._session_tag(session)}:reinit"

    def claim_keys(self, session: str) -> tuple[str, str, str]:
        """`session`, `streams` and `requests` of one session, its tag written once (per JSON call)."""
        tag = self._session_tag(session)
        return f"{tag}:session", f"{tag}:streams", f"{tag}:reqs"

    def requests(self, session: str) -> str:
        """Claims of the session's request ids (replay protection); shares the session's TTL."""
        return f"{self._session_tag(session)}:reqs"

    def idempotency(self, digest: str) -> str:
        """One Idempotency-Key record; `digest` hashes (principal, key), its own hash slot."""
        return f"{self.prefix}:idem:{{{digest}}}"

    def stream_keys(self, session: str, stream: str) -> tuple[str, str, str]:
        """(events, meta, lease) of one stream: the KEYS of the event-log scripts."""
        return self.events(session, stream), self.meta(session, stream), self.lease(session, stream)

    def limit(self, kind: str, who: str) -> str:
        """Per-client limit state (rate windows, session and stream sets); tagged by client."""
        return f"{self.prefix}:limits:{kind}:{{{who}}}"

    def quota(self, rule: str, key: str) -> str:
        """One quota bucket: the theoretical arrival time of its next request (GCRA)."""
        return f"{self.prefix}:{{quota:{rule}:{key}}}"

    def audit(self) -> str:
        return f"{self.prefix}:audit"

    def legacy(self, bridge: str) -> tuple[str, str]:
        """(record, outbox) of one legacy HTTP+SSE bridge session; one hash slot per bridge."""
        tag = f"{self.prefix}:{{legacy:{bridge}}}"
        return f"{tag}:bridge", f"{tag}:out"

    def replica_of(self, key: str) -> str:
        return key.removeprefix(f"{self.prefix}:replica:")

    def session_pattern(self, id_prefix: str = "") -> str:
        """SCAN pattern of session records, optionally of ids starting with `id_prefix`."""
        return f"{_literal(self.prefix)}:{{{_literal(id_prefix)}*}}:session"

    def session_of(self, key: str) -> str:
        """The session id inside a session record key."""
        return key.removeprefix(f"{self.prefix}:{{").removesuffix("}:session")

    def task_pattern(self, kind: str = "task") -> str:
        """SCAN pattern of gateway-served task records (`task`) or pass-through routes (`route`)."""
        return f"{_literal(self.prefix)}:{{task:*}}:{kind}"

    def task_of(self, key: str) -> str:
        """The task id inside a task record or route key."""
        return key.removeprefix(f"{self.prefix}:{{task:").rsplit("}:", 1)[0]

    def legacy_notify(self, outbox: str) -> str:
        """Shard channel announcing new outbox messages (same slot as the outbox)."""
        return f"{outbox.removesuffix(':out')}:n"

    def task(self, task_id: str) -> str:
        """One task's record; its own hash slot (a task belongs to no session)."""
        return f"{self.prefix}:{{task:{task_id}}}:task"

    def task_route(self, task_id: str) -> str:
        """Where a task that an upstream created lives (pass-through affinity)."""
        return f"{self.prefix}:{{task:{task_id}}}:route"

    def cache_generation(self, pool: str, family: str) -> str:
        """Generation of one response-cache family (a list of a pool, or the reads of one URI)."""
        return f"{self.prefix}:{{cache:{pool}:{family}}}:gen"

    def cache_entry(self, pool: str, family: str, digest: str) -> str:
        """One cached answer; in its family's hash slot, so lookups and stores are one script."""
        return f"{self.prefix}:{{cache:{pool}:{family}}}:e:{digest}"

    def upstream_era(self, instance: str) -> str:
        """What era detection found for one upstream instance (and its initialize result)."""
        return f"{self.prefix}:era:{instance}"

    def bridge_session(self, digest: str) -> str:
        """One upstream session held by the era bridge; `digest` hashes (instance, principal, capabilities)."""
        return f"{self.prefix}:{{bridge:{digest}}}:held"

    def bridge_held(self, instance: str) -> str:
        """The bridge's upstream sessions on one instance, scored by last use (bound and reaping)."""
        return f"{self.prefix}:bridge:held:{instance}"

    def bridge_secret(self) -> str:
        return f"{self.prefix}:bridge:secret"

    def bridge_rounds(self) -> str:
        """Open rounds of bridged multi round-trip requests, scored by their state's expiry."""
        return f"{self.prefix}:bridge:rounds"

    def pattern(self) -> str:
        """SCAN pattern matching every key under this prefix (tests and tooling)."""
        return f"{self.prefix}:*"
