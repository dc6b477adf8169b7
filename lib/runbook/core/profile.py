"""Environment profiles: everything about a target that is not secret.

`parameters/<env>.yaml` is validated on load: unknown keys, wrong types and
missing values raise `ParameterError` naming the key and the file. Values
may say `${sandbox.KEY}` or `${twin.KEY}`: they are filled from the sandbox's
or the production twin's state.json (ports, addresses, host keys and key paths
cannot be known before `runbook sandbox up` / `runbook twin up`).

Example::

    >>> p = load_profile("production")
    >>> p.target.host, p.services.manager, p.kind
    ('188.245.55.180', 'systemd', 'production')
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from runbook.core.inventory import Fleet, Inventory, build_fleet
from runbook.core.paths import parameters_dir, project_root, sandbox_state_dir
from runbook.errors import ParameterError

_REF = re.compile(r"\$\{(sandbox|twin_fleet|twin)\.([A-Za-z0-9_]+)\}")
KINDS = ("sandbox", "staging", "production")


@dataclass(frozen=True)
class Target:
    transport: str = "ssh"
    host: str = ""
    port: int = 22
    user: str = "root"
    key: str | None = None
    host_key: list[str] = field(default_factory=list)
    known_hosts: str | None = None
    jump: str | None = None
    use_agent: bool = False
    max_sessions: int = 10
    connect_timeout: float = 10.0
    command_timeout: float = 600.0


@dataclass(frozen=True)
class App:
    dir: str = "/opt/dealix"
    venv: str = "/opt/dealix/.venv"
    env_file: str = "/opt/dealix/.env"
    last_good_sha_file: str = "/opt/dealix/.last_good_sha"
    lock_path: str = "/var/lock/dealix-runbook.lock"


@dataclass(frozen=True)
class Services:
    manager: str = "systemd"
    control: str = "systemctl"
    api: str = "dealix-api"
    postgres: str = "postgresql"
    redis: str = "redis-server"
    nginx: str | None = "nginx"
    fail2ban: str | None = "fail2ban"


@dataclass(frozen=True)
class Postgres:
    psql: str = "sudo -n -u postgres psql"
    database: str = "dealix"
    data_dir: str = "/var/lib/postgresql"


@dataclass(frozen=True)
class Api:
    base_url: str = "https://api.dealix.me"
    verify_tls: bool = True
    timeout: float = 10.0


@dataclass(frozen=True)
class Redis:
    url: str = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class GitHub:
    api_url: str = "https://api.github.com"
    repo: str = "VoXc2/dealix"
    branch: str = "main"


@dataclass(frozen=True)
class Sentry:
    api_url: str = "https://sentry.io"
    org: str = "dealix"
    project: str = "dealix-api"


@dataclass(frozen=True)
class PostHog:
    api_url: str = "https://eu.posthog.com"
    ingest_url: str = "https://eu.i.posthog.com"
    project_id: str = ""


@dataclass(frozen=True)
class Backups:
    dir: str = "/var/backups/postgres"
    pattern: str = "dealix-*.sql.gz"
    min_size_bytes: int = 1024
    # custom-format dumps (`pg_dump -Fc`), restored in parallel with `pg_restore -j`
    custom_pattern: str = "dealix-*.dump"
    # the tables the restore drill compares with production
    tables: list[str] = field(default_factory=lambda: ["leads", "users"])


@dataclass(frozen=True)
class Secrets:
    """Names of the environment variables holding each secret, and an optional
    0600 file of `NAME=value` lines. Values are never stored in a profile."""

    file: str | None = None
    admin_key: str = "DEALIX_ADMIN_KEY"
    github_token: str = "GITHUB_TOKEN"
    sentry_token: str = "SENTRY_AUTH_TOKEN"
    posthog_key: str = "POSTHOG_PERSONAL_API_KEY"
    anthropic_key: str = "ANTHROPIC_API_KEY"
    openai_key: str = "OPENAI_API_KEY"
    google_key: str = "GOOGLE_API_KEY"


@dataclass(frozen=True)
class DoNotTouch:
    protected_branches: list[str] = field(default_factory=lambda: ["main"])
    no_force_delete_branches: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    corrupt_db_pattern: str = "dealix_corrupt_*"
    corrupt_db_keep_days: int = 7


@dataclass(frozen=True)
class Targets:
    rollback_minutes: float = 5
    restore_minutes: float = 15
    rpo_hours: float = 24
    row_tolerance_pct: float = 5
    watch_minutes: float = 10
    sentry_probe_seconds: float = 60
    pending_approvals_max: int = 10
    failover_after_minutes: float = 30
    webhooks_drain_limit: int = 100
    outbound_drain_limit: int = 50
    incident_doc_minutes: float = 60
    # the review: a drill is missed after 31 days plus this grace; slow past the usual + this
    drill_grace_days: float = 0
    drill_slow_margin_pct: float = 50


@dataclass(frozen=True)
class Security:
    """Scenario 6: the logs read and kept as evidence, the firewall, fail2ban.

    `firewall` is "ufw", "iptables" or None (no host firewall: its steps
    report "not available on this target"). `fail2ban_status_file` stands in
    for `fail2ban-client status <jail>` where no fail2ban runs (the loopback
    sandbox); `evidence_dir` is where the incident tarball is made on the server;
    `outside_probe` proves a lockdown from another address (isolated sandbox).
    """

    auth_log: str = "/var/log/auth.log"
    nginx_logs: str = "/var/log/nginx"
    api_access_log: str = "/var/log/nginx/access.log"
    app_logs: list[str] = field(default_factory=lambda: ["/var/log/dealix*"])
    firewall: str | None = "ufw"
    fail2ban_jail: str = "sshd"
    fail2ban_status_file: str | None = None
    evidence_dir: str = "/root"
    ssh_port: int = 22
    # A local shell command run from outside the allowed address, `{host}`/`{port}`
    # filled in; exit 0 = SSH reachable. None: no outside vantage point.
    outside_probe: str | None = None
    outside_host: str | None = None


@dataclass(frozen=True)
class LLMProviders:
    """Scenario 4: each LLM provider's Statuspage (base URL of `/api/v2/summary.json`)
    and API base URL, by provider name. Empty unless the profile names them, so a
    profile without an `llm:` block never reaches the real providers by accident
    (production.yaml: https://status.anthropic.com, https://api.anthropic.com, ...)."""

    status_pages: dict[str, str] = field(default_factory=dict)
    api_urls: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Notify:
    """Who hears about a run nobody watches (runbook.core.notify; docs/scheduling.md).

    `urls` are Apprise URLs without secrets in them; a URL that holds a token
    (a Slack webhook, a healthchecks.io UUID) is named by the secret that holds
    it, `url_secrets` / `ping_secret`: an environment variable or a line of the
    profile's secrets file, never the profile itself. `when`: "failure" (any
    outcome but ok), "always", or outcome names. Each URL is tried `attempts`
    times, `backoff_s` doubling between tries, `timeout_s` per request.
    """

    urls: list[str] = field(default_factory=list)
    url_secrets: list[str] = field(default_factory=list)
    when: list[str] = field(default_factory=lambda: ["failure"])
    ping: str | None = None
    ping_secret: str | None = None
    attempts: int = 3
    backoff_s: float = 2.0
    timeout_s: float = 10.0


@dataclass(frozen=True)
class Profile:
    name: str
    kind: str
    description: str = ""
    target: Target = field(default_factory=Target)
    app: App = field(default_factory=App)
    services: Services = field(default_factory=Services)
    postgres: Postgres = field(default_factory=Postgres)
    api: Api = field(default_factory=Api)
    redis: Redis = field(default_factory=Redis)
    github: GitHub = field(default_factory=GitHub)
    sentry: Sentry = field(default_factory=Sentry)
    posthog: PostHog = field(default_factory=PostHog)
    backups: Backups = field(default_factory=Backups)
    secrets: Secrets = field(default_factory=Secrets)
    do_not_touch: DoNotTouch = field(default_factory=DoNotTouch)
    targets: Targets = field(default_factory=Targets)
    llm: LLMProviders = field(default_factory=LLMProviders)
    security: Security = field(default_factory=Security)
    notify: Notify = field(default_factory=Notify)
    # several hosts in groups (runbook.core.inventory); None: `target` is the one host
    inventory: Inventory | None = None
    source: str = ""

    @property
    def is_sandbox(self) -> bool:
        return self.kind == "sandbox"

    @property
    def fleet(self) -> Fleet:
        """The profile's hosts by group: its inventory, or `target` as a fleet of one
        (named after its address, in every role group)."""
        if self.inventory is not None:
            return build_fleet(self.inventory, self.target, self.source)
        t = self.target
        name = t.host if t.transport == "ssh" and t.host else "localhost"
        return Fleet.of_one(
            name=name,
            address=t.host,
            port=t.port,
            user=t.user,
            key=t.key,
            host_key=t.host_key,
            known_hosts=t.known_hosts,
            source=self.source,
        )

    def require_one_host(self, scenario: str = "this scenario") -> None:
        """Refuse a fleet profile for a scenario not written for a fleet (its steps reach
        one server): a ParameterError (exit 2) before anything runs. The scenarios that
        name their hosts are runbook.session.fleet.FLEET_SCENARIOS."""
        if self.inventory is None:
            return
        hosts = self.fleet.hosts
        raise ParameterError(
            f"{self.name} is a fleet profile ({len(hosts)} hosts: {', '.join(hosts)}) and "
            f"{scenario} is written for one server (its steps do not name their hosts)",
            key="env",
            source=self.source,
            fix="run it with a single-host profile (production, twin); the scenarios that "
            "run on a fleet are listed in docs/fleet.md",
        )

    def require_groups(self, *groups: str, scenario: str = "this scenario") -> Fleet:
        """The fleet, once every group `scenario` needs has a host; else a ParameterError
        (exit 2) naming the empty group and the fix, before anything runs."""
        fleet = self.fleet
        fleet.require_groups(*groups, scenario=scenario)
        return fleet


def load_profile(name: str, *, directory: Path | None = None) -> Profile:
    """Load and validate `parameters/<name>.yaml`."""
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name or ""):
        raise ParameterError(
            f"environment name {name!r} is not valid: use the name of a file in parameters/ "
            "(sandbox, staging, production)",
            key="env",
        )
    directory = directory or parameters_dir()
    path = directory / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in directory.glob("*.yaml"))
        raise ParameterError(
            f"no profile for environment {name!r}: {path} does not exist "
            f"(known: {', '.join(known)})",
            key="env",
            source=str(path),
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path} is not valid YAML: {exc}", source=str(path)) from None
    if not isinstance(data, dict):
        raise ParameterError(f"{path} must hold a mapping at the top level", source=str(path))
    data = _extend(data, path, directory, [name])
    data = _interpolate(data, path)
    profile = _build(Profile, data, "", str(path))
    if profile.name != name:
        raise ParameterError(
            f"{path} says name: {profile.name!r}, expected {name!r}", key="name", source=str(path)
        )
    if profile.kind not in KINDS:
        raise ParameterError(
            f"kind must be one of {', '.join(KINDS)}, not {profile.kind!r}",
            key="kind",
            source=str(path),
        )
    if profile.target.transport not in ("ssh", "local"):
        raise ParameterError(
            "target.transport must be 'ssh' or 'local'", key="target.transport", source=str(path)
        )
    if profile.services.manager not in ("systemd", "supervisor"):
        raise ParameterError(
            "services.manager must be 'systemd' or 'supervisor'",
            key="services.manager",
            source=str(path),
        )
    if profile.inventory is not None:
        _check_fleet_target(profile, str(path))
        profile.fleet  # noqa: B018 (validates the inventory: refused here, before anything runs)
    elif profile.target.transport == "ssh" and not profile.target.host:
        raise ParameterError("target.host is missing", key="target.host", source=str(path))
    if not profile.is_sandbox:
        _require_safety_keys(profile, data, str(path))
    return profile


def _check_fleet_target(profile: Profile, source: str) -> None:
    """With an inventory, `target` holds only what every host inherits (port, user, key,
    timeouts): a `target.host` would name one server the fleet's runs never use."""
    t = profile.target
    if t.transport != "ssh":
        raise ParameterError(
            f"target.transport is {t.transport!r} in {source}, but an inventory's hosts are "
            "reached over SSH",
            key="target.transport",
            source=source,
            fix="set target.transport: ssh, or remove inventory: for a local profile",
        )
    if t.jump:
        raise ParameterError(
            f"target.jump is set in {source}, which has an inventory: a jump host for a "
            "fleet is not supported yet",
            key="target.jump",
            source=source,
            fix="reach the hosts directly (their addresses under inventory.hosts), or use a "
            "single-host profile through the jump host",
        )
    if t.host or t.host_key or t.known_hosts:
        raise ParameterError(
            f"target.host / target.host_key are set in {source}, which also has an "
            "inventory: each host's address and pinned key live under inventory.hosts",
            key="target.host",
            source=source,
            fix='set target.host: "" and target.host_key: [] (a profile that extends a '
            "single-host one inherits them), and target.known_hosts: null",
        )


def _require_safety_keys(profile: Profile, data: dict[str, Any], source: str) -> None:
    """A staging or production profile states its do-not-touch list and its pinned host
    key: a default (or a forgotten block) must not silently leave a rule without data."""
    dnt = data.get("do_not_touch")
    if not isinstance(dnt, dict):
        raise ParameterError(
            f"do_not_touch is missing in {source}: a {profile.kind} profile lists the "
            "runbook's appendix B (protected_branches, no_force_delete_branches, files)",
            key="do_not_touch",
            source=source,
        )
    for key in ("protected_branches", "files"):
        if not dnt.get(key):
            raise ParameterError(
                f"do_not_touch.{key} is missing or empty in {source} (runbook appendix B)",
                key=f"do_not_touch.{key}",
                source=source,
            )
    t = profile.target
    if profile.inventory is None and t.transport == "ssh" and not t.host_key and not t.known_hosts:
        raise ParameterError(
            f"target.host_key is missing in {source}: a {profile.kind} profile pins the "
            "server's SSH host key (never StrictHostKeyChecking=no). Get it from a trusted "
            f"channel: ssh-keyscan -t ed25519 {t.host} > /tmp/hostkey; ssh-keygen -lf "
            "/tmp/hostkey (compare with the provider's console), then paste the "
            '"ssh-ed25519 AAAA..." part under target.host_key (or name a pinned '
            "known_hosts file in target.known_hosts)",
            key="target.host_key",
            source=source,
        )


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`: mappings merge key by key, anything else replaces.

    >>> _merge({"a": {"x": 1, "y": 2}, "l": [1]}, {"a": {"y": None}, "l": [2]})
    {'a': {'x': 1, 'y': None}, 'l': [2]}
    """
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _extend(data: dict[str, Any], path: Path, directory: Path, chain: list[str]) -> dict[str, Any]:
    """`extends: <profile>`: the named profile's raw YAML with this file's keys on top.

    A variant (sandbox-isolated) states only what differs, so it cannot drift
    from its base; a key set to null in the variant overrides the base's value.
    Bases may extend further; a cycle is an error.
    """
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    if not isinstance(base_name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]*", base_name):
        raise ParameterError(
            f"extends must name a profile in {directory}", key="extends", source=str(path)
        )
    if base_name in chain:
        raise ParameterError(
            f"extends cycle: {' -> '.join([*chain, base_name])}", key="extends", source=str(path)
        )
    base_path = directory / f"{base_name}.yaml"
    if not base_path.exists():
        raise ParameterError(
            f"extends: {base_name!r}: {base_path} does not exist", key="extends", source=str(path)
        )
    try:
        base = yaml.safe_load(base_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParameterError(f"{base_path} is not valid YAML: {exc}", source=str(path)) from None
    if not isinstance(base, dict):
        raise ParameterError(f"{base_path} must hold a mapping", source=str(path))
    base = _extend(base, base_path, directory, [*chain, base_name])
    return _merge(base, data)


def sandbox_state(state_dir: Path | None = None) -> dict[str, Any]:
    """The running sandbox's state.json, or a ParameterError saying how to start it."""
    path = (state_dir or sandbox_state_dir()) / "state.json"
    if not path.exists():
        raise ParameterError(
            f"the sandbox is not set up ({path} is missing): run `runbook sandbox up` first",
            key="env",
            source=str(path),
        )
    return json.loads(path.read_text())


def twin_state(state_dir: Path | None = None) -> dict[str, Any]:
    """The running twin's state.json (`$RUNBOOK_TWIN_DIR`, else <project>/.twin), or a
    ParameterError saying how to start it."""
    if state_dir is None:
        env = os.environ.get("RUNBOOK_TWIN_DIR")
        state_dir = Path(env).expanduser().resolve() if env else project_root() / ".twin"
    path = state_dir / "state.json"
    if not path.exists():
        raise ParameterError(
            f"the production twin is not up ({path} is missing): run `runbook twin up` as "
            "root, then run through `runbook twin exec -- runbook run ...` (its names and CA)",
            key="env",
            source=str(path),
        )
    return json.loads(path.read_text())


def twin_fleet_state(state_dir: Path | None = None) -> dict[str, Any]:
    """The running fleet twin's state.json (`$RUNBOOK_TWIN_FLEET_DIR`, else
    <project>/.twin-fleet), or a ParameterError saying how to start it."""
    if state_dir is None:
        env = os.environ.get("RUNBOOK_TWIN_FLEET_DIR")
        state_dir = Path(env).expanduser().resolve() if env else project_root() / ".twin-fleet"
    path = state_dir / "state.json"
    if not path.exists():
        raise ParameterError(
            f"the fleet twin is not up ({path} is missing): run `runbook twin up --fleet` as "
            "root, then run through `runbook twin exec --fleet -- runbook run ...`",
            key="env",
            source=str(path),
        )
    return json.loads(path.read_text())


_STATES = {"sandbox": sandbox_state, "twin": twin_state, "twin_fleet": twin_fleet_state}
_UP = {
    "sandbox": "runbook sandbox up",
    "twin": "runbook twin up",
    "twin_fleet": "runbook twin up --fleet",
}


def _interpolate(data: Any, path: Path) -> Any:
    states: dict[str, dict[str, Any]] = {}

    def state_of(kind: str) -> dict[str, Any]:
        if kind not in states:
            states[kind] = _STATES[kind]()
        return states[kind]

    def fill(value: Any, key: str) -> Any:
        if isinstance(value, dict):
            return {k: fill(v, f"{key}.{k}" if key else k) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v, key) for v in value]
        if not isinstance(value, str) or "${" not in value:
            return value

        def repl(m: re.Match[str]) -> str:
            state = state_of(m.group(1))
            if m.group(2) not in state:
                raise ParameterError(
                    f"{key}: the {m.group(1)} state has no {m.group(2)!r}; run `{_UP[m.group(1)]}`",
                    key=key,
                    source=str(path),
                )
            return str(state[m.group(2)])

        whole = _REF.fullmatch(value)
        if whole:
            state = state_of(whole.group(1))
            # keep ports as ints: "${sandbox.ssh_port}" alone becomes the value itself
            if whole.group(2) in state and not isinstance(state[whole.group(2)], str):
                return state[whole.group(2)]
        return _REF.sub(repl, value)

    return fill(data, "")


def _build(cls: type, data: Any, prefix: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ParameterError(
            f"{prefix or 'profile'} must be a mapping in {source}",
            key=prefix or None,
            source=source,
        )
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)} - {"source"}
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ParameterError(
            f"unknown key {key!r} in {source} (allowed here: {', '.join(sorted(names))})",
            key=key,
            source=source,
        )
    kwargs: dict[str, Any] = {}
    for f in fields(cls):
        if f.name == "source":
            kwargs["source"] = source
            continue
        key = f"{prefix}{f.name}"
        if f.name not in data:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ParameterError(f"missing key {key!r} in {source}", key=key, source=source)
            continue
        kwargs[f.name] = _coerce(hints[f.name], data[f.name], key, source)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str, source: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
        return _build(tp, value, key + ".", source)
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise _type_error(key, "a list", value, source)
        return [_coerce(args[0], v, key, source) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(key, "a mapping", value, source)
        return {str(k): _coerce(args[1], v, f"{key}.{k}", source) for k, v in value.items()}
    if args and type(None) in args:
        if value is None:
            return None
        inner = next(a for a in args if a is not type(None))
        return _coerce(inner, value, key, source)
    if tp is bool:
        if not isinstance(value, bool):
            raise _type_error(key, "true or false", value, source)
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.isdigit():
                return int(value)
            raise _type_error(key, "an integer", value, source)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(key, "a number", value, source)
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise _type_error(key, "a string", value, source)
        text = str(value)
        return os.path.expanduser(text) if text.startswith("~/") else text
    return value


def _type_error(key: str, wanted: str, value: Any, source: str) -> ParameterError:
    return ParameterError(
        f"{key} in {source} must be {wanted}, not {type(value).__name__} {value!r}",
        key=key,
        source=source,
    )
