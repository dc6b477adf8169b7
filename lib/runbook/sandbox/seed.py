"""Seed data and nightly backups that look like production's.

The rows are generated in memory (deterministic for a given "now"), then
loaded with COPY in phases: before each day's 03:00 UTC `pg_dump | gzip`
only the rows created up to that moment exist, so every backup holds what
production would have held that night and the newest one is a few hours
behind the live database, as a real RPO check expects.

Example::

    >>> from datetime import datetime, timezone
    >>> now = datetime(2026, 11, 27, 7, 30, tzinfo=timezone.utc)
    >>> [t.strftime("%m-%d %H:%M") for t in dump_times(now)]
    ['11-24 03:00', '11-25 03:00', '11-26 03:00', '11-27 03:00']
    >>> data = generate(now, leads=500)
    >>> len(data["leads"]), max(r["created_at"] for r in data["leads"]) <= now
    (500, True)
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbook.sandbox.build.host import clean_env
from runbook.sandbox.build.postgres import as_db_superuser
from runbook.sandbox.procs import SandboxError

if TYPE_CHECKING:
    from runbook.sandbox.manager import Sandbox

LEADS = 12_000
USERS = 200
BACKUP_DAYS = 4
DUMP_HOUR_UTC = 3

_CITIES = (
    "Riyadh",
    "Jeddah",
    "Dammam",
    "Khobar",
    "Makkah",
    "Madinah",
    "Tabuk",
    "Abha",
    "Qassim",
    "Hail",
    "Jazan",
    "Najran",
    "Yanbu",
    "Al Ula",
    "Taif",
    "Jubail",
    "Dubai",
    "Abu Dhabi",
    "Doha",
    "Manama",
    "Muscat",
    "Kuwait",
)
_NAMES = (
    "Al Noor",
    "Al Safwa",
    "Al Rayyan",
    "Al Yamamah",
    "Al Faisaliah",
    "Najd",
    "Hejaz",
    "Tihama",
    "Al Bayan",
    "Al Mada",
    "Sahara",
    "Al Waha",
    "Al Marjan",
    "Al Jazeera",
    "Al Khaleej",
    "Al Dana",
    "Al Majd",
    "Rawabi",
    "Al Hilal",
    "Nakheel",
    "Al Ameen",
    "Tamkeen",
    "Masar",
    "Wasl",
    "Injaz",
    "Ruwad",
    "Afaq",
    "Manara",
    "Sadeem",
    "Thuraya",
)
_SECTORS = (
    "Logistics",
    "Trading",
    "Contracting",
    "Foods",
    "Health Clinics",
    "Tech",
    "Real Estate",
    "Auto Parts",
    "Coffee Roasters",
    "Hospitality",
    "Solar",
    "Fintech",
    "Print House",
    "Marine Services",
    "Textiles",
    "Dates",
    "Pharma",
    "Education",
    "Cosmetics",
    "Facilities Management",
    "Steel",
    "Perfumes",
)
_SUFFIXES = ("Co.", "Est.", "LLC", "Group", "Trading Est.", "Holding", "", "", "")
_FIRST = (
    "Abdullah",
    "Mohammed",
    "Fahad",
    "Khalid",
    "Sultan",
    "Faisal",
    "Turki",
    "Nasser",
    "Saad",
    "Omar",
    "Yousef",
    "Ahmed",
    "Ali",
    "Hamad",
    "Majed",
    "Bandar",
    "Saud",
    "Abdulrahman",
    "Ibrahim",
    "Rakan",
    "Nouf",
    "Sara",
    "Reem",
    "Lama",
    "Haya",
    "Maha",
    "Noura",
    "Amal",
    "Dana",
    "Latifa",
    "Jawaher",
    "Hessa",
    "Mashael",
    "Shahad",
    "Ghada",
    "Asma",
    "Rana",
    "Alanoud",
)
_LAST = (
    "Al-Qahtani",
    "Al-Otaibi",
    "Al-Ghamdi",
    "Al-Zahrani",
    "Al-Harbi",
    "Al-Shehri",
    "Al-Dosari",
    "Al-Mutairi",
    "Al-Anazi",
    "Al-Shammari",
    "Al-Subaie",
    "Al-Malki",
    "Al-Amri",
    "Al-Juhani",
    "Al-Rashidi",
    "Al-Hajri",
    "Al-Marri",
    "Al-Kuwari",
    "Al-Balushi",
    "Al-Mansoori",
    "Al-Khalifa",
    "Al-Sulaiman",
    "Al-Tamimi",
    "Bakr",
    "Haddad",
    "Al-Faraj",
    "Al-Jaber",
    "Al-Saleh",
)
_SOURCES = (
    ("website", 30),
    ("referral", 14),
    ("linkedin", 16),
    ("whatsapp", 14),
    ("cold-outbound", 10),
    ("partner", 6),
    ("event:LEAP", 5),
    ("google-ads", 5),
)
_PHONE = (("+9665", 8, 80), ("+9715", 8, 9), ("+9743", 7, 4), ("+9733", 7, 3), ("+9689", 7, 4))
_PLANS = (
    (1, "starter", "Starter", "299.00", 500, True),
    (2, "growth", "Growth", "899.00", 5_000, True),
    (3, "scale", "Scale", "2499.00", 50_000, True),
    (4, "enterprise", "Enterprise", "7999.00", None, True),
    (5, "pilot-2025", "Pilot (2025, legacy)", "0.00", 100, False),
)


def dump_times(now: datetime, days: int = BACKUP_DAYS) -> list[datetime]:
    """When each of the last `days` nightly dumps ran (03:00 UTC, today's capped at now)."""
    today = now.astimezone(UTC).date()
    out = []
    for back in range(days - 1, -1, -1):
        d = today - timedelta(days=back)
        out.append(min(datetime(d.year, d.month, d.day, DUMP_HOUR_UTC, tzinfo=UTC), now))
    return out


def _weighted(rng: random.Random, pairs: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([p for p, _ in pairs], weights=[w for _, w in pairs])[0]


def _slug(text: str) -> str:
    return "".join(c for c in text.lower().replace(" ", "-") if c.isalnum() or c == "-").strip("-")


def _phone(rng: random.Random) -> str:
    prefix, digits, _ = rng.choices(_PHONE, weights=[w for *_, w in _PHONE])[0]
    return prefix + "".join(str(rng.randrange(10)) for _ in range(digits))


def _lead_times(rng: random.Random, now: datetime, n: int) -> list[datetime]:
    """`n` timestamps over the last 90 days up to an hour ago, shaped like a growing B2B funnel.

    More leads lately (growth), fewer on the Saudi weekend (Friday,
    Saturday), most in office hours Riyadh time (UTC+3).
    """
    end = now - timedelta(hours=1)
    start = now - timedelta(days=90)
    span = (end - start).total_seconds()
    out: list[datetime] = [start + timedelta(minutes=7), end - timedelta(minutes=2)]
    while len(out) < n:
        t = start + timedelta(seconds=rng.random() * span)
        growth = 0.55 + 0.9 * (t - start).total_seconds() / span
        local = t + timedelta(hours=3)
        weekday = 0.45 if local.weekday() in (4, 5) else 1.0
        hour = 1.0 if 8 <= local.hour < 18 else (0.45 if 18 <= local.hour < 23 else 0.12)
        if rng.random() < growth * weekday * hour / 1.45:
            out.append(t)
    return sorted(out)


Rows = dict[str, list[dict[str, Any]]]


def generate(now: datetime, leads: int = LEADS, users: int = USERS) -> Rows:
    """Every seeded row, per table, with explicit ids; deterministic for a given `now`."""
    rng = random.Random(20260423)
    data: dict[str, list[dict[str, Any]]] = {}

    data["pricing_plans"] = [
        {
            "id": i,
            "code": c,
            "name": n,
            "price_monthly_sar": p,
            "max_leads": m,
            "active": a,
            "created_at": now - timedelta(days=500),
        }
        for i, c, n, p, m, a in _PLANS
    ]

    user_rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i in range(1, users + 1):
        while True:
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            local = f"{first.lower()}.{_slug(last).replace('al-', '')}"
            email = f"{local}@dealix.me"
            if email not in seen:
                break
            email = f"{local}{rng.randrange(2, 99)}@dealix.me"
            if email not in seen:
                break
        seen.add(email)
        role = "admin" if i <= 3 else rng.choices(("sales", "member", "ops"), (70, 22, 8))[0]
        if i > users - 4:
            created = now - timedelta(days=rng.uniform(3, 20))  # a few new hires
        else:
            created = now - timedelta(days=rng.uniform(100, 540))
        user_rows.append(
            {
                "id": i,
                "email": email,
                "full_name": f"{first} {last}",
                "role": role,
                "created_at": created,
            }
        )
    data["users"] = sorted(user_rows, key=lambda r: r["created_at"])
    owners = [
        u["id"]
        for u in user_rows
        if u["role"] == "sales" and u["created_at"] < now - timedelta(days=91)
    ]

    lead_rows: list[dict[str, Any]] = []
    for i, t in enumerate(_lead_times(rng, now, leads), start=1):
        city = rng.choice(_CITIES) + " " if rng.random() < 0.4 else ""
        company = f"{rng.choice(_NAMES)} {city}{rng.choice(_SECTORS)} {rng.choice(_SUFFIXES)}"
        company = company.strip()
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        domain = _slug(company.replace("Co.", "").replace("Est.", ""))[:30].strip("-")
        tld = rng.choice((".sa", ".com.sa", ".com", ".ae", ".sa"))
        age_days = (now - t).days
        if age_days < 3:
            status = rng.choices(("new", "contacted"), (80, 20))[0]
        elif age_days < 20:
            status = rng.choices(("new", "contacted", "qualified", "lost"), (25, 45, 22, 8))[0]
        else:
            status = rng.choices(
                ("contacted", "qualified", "proposal", "won", "lost"), (25, 20, 13, 12, 30)
            )[0]
        lead_rows.append(
            {
                "id": i,
                "user_id": rng.choice(owners) if rng.random() < 0.9 else None,
                "company": company,
                "contact_name": f"{first} {last}",
                "email": f"{first.lower()}@{domain}{tld}" if rng.random() < 0.93 else None,
                "phone": _phone(rng) if rng.random() < 0.85 else None,
                "source": _weighted(rng, _SOURCES),
                "status": status,
                "score": max(0, min(100, int(rng.gauss(55, 20)))),
                "created_at": t,
            }
        )
    data["leads"] = lead_rows

    end = now - timedelta(hours=1)
    notes: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    note_texts = (
        "Called, asked for a proposal in Arabic and English.",
        "Interested in the Growth plan; decision after Ramadan.",
        "Sent pricing; waiting for procurement.",
        "No answer, follow up on WhatsApp.",
        "Demo booked with their GM.",
        "Wants ZATCA e-invoicing integration.",
        "Budget approved for Q1.",
        "Competitor already in place, revisit in 6 months.",
    )
    for lead in lead_rows:
        if rng.random() < 0.25:
            t = min(lead["created_at"] + timedelta(hours=rng.uniform(0.5, 120)), end)
            notes.append(
                {
                    "id": len(notes) + 1,
                    "lead_id": lead["id"],
                    "author": rng.choice(user_rows)["email"],
                    "body": rng.choice(note_texts),
                    "created_at": t,
                }
            )
        for kind, p in (("enrichment", 0.5), ("outbound", 0.2)):
            if rng.random() < p:
                t = min(lead["created_at"] + timedelta(seconds=rng.uniform(5, 3600)), end)
                calls.append(
                    {
                        "id": len(calls) + 1,
                        "job_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                        "kind": kind,
                        "provider": rng.choices(("anthropic", "openai", "google"), (85, 12, 3))[0],
                        "lead_id": lead["id"],
                        "created_at": t,
                    }
                )
    data["lead_notes"] = sorted(notes, key=lambda r: r["created_at"])
    data["llm_calls"] = sorted(calls, key=lambda r: r["created_at"])

    approvals = []
    kinds = (
        ("discount", {"plan": "scale", "discount_pct": 20, "reason": "annual prepay"}),
        ("refund", {"amount_sar": 899, "reason": "double charge"}),
        ("bulk_outbound", {"recipients": 1200, "template": "ramadan-offer"}),
        ("plan_change", {"from": "growth", "to": "enterprise"}),
        ("data_export", {"scope": "leads", "format": "csv"}),
    )
    for i in range(1, 15):
        kind, payload = kinds[i % len(kinds)]
        pending = i > 9
        created = now - timedelta(hours=rng.uniform(2, 40) if pending else rng.uniform(50, 400))
        approvals.append(
            {
                "id": i,
                "kind": kind,
                "payload": json.dumps({**payload, "lead_id": rng.randrange(1, leads)}),
                "status": "pending"
                if pending
                else rng.choice(("approved", "rejected", "approved")),
                "requested_by": rng.choice(user_rows)["email"],
                "created_at": created,
            }
        )
    data["approvals"] = sorted(approvals, key=lambda r: r["created_at"])

    events = []
    for i in range(1, 41):
        source = rng.choice(("moyasar", "hubspot", "whatsapp", "calendly"))
        t = min(now - timedelta(hours=rng.uniform(1, 24 * 7)), end)
        events.append(
            {
                "id": i,
                "event_id": f"evt_{uuid.UUID(int=rng.getrandbits(128)).hex[:24]}",
                "source": source,
                "payload": json.dumps(
                    {"type": f"{source}.event", "lead_id": rng.randrange(1, leads)}
                ),
                "received_at": t,
                "processed_at": t + timedelta(seconds=rng.uniform(0.1, 3)),
            }
        )
    data["webhook_events"] = sorted(events, key=lambda r: r["received_at"])
    return data


_TIME_COLUMN = {"webhook_events": "received_at"}
# Parents before children: foreign keys hold within every phase.
_ORDER = (
    "pricing_plans",
    "users",
    "leads",
    "lead_notes",
    "llm_calls",
    "approvals",
    "webhook_events",
)


def _load_phase(
    conn: Any, data: dict[str, list[dict[str, Any]]], lo: datetime | None, hi: datetime
) -> int:
    n = 0
    with conn.cursor() as cur:
        for table in _ORDER:
            rows = data.get(table, [])
            col = _TIME_COLUMN.get(table, "created_at")
            chunk = [r for r in rows if (lo is None or r[col] > lo) and r[col] <= hi]
            if not chunk:
                continue
            columns = [c for c in chunk[0] if table != "pricing_plans" or c != "created_at"]
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for r in chunk:
                    copy.write_row([r[c] for c in columns])
            # Table names come from _ORDER, never from input.
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                f"(SELECT max(id) FROM {table}))"
            )
            n += len(chunk)
    return n


def dump(sb: Sandbox, target: Path, when: datetime | None = None) -> Path:
    """`pg_dump dealix | gzip > target` as the database superuser; mtime set to `when`."""
    state = sb.state
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    argv = as_db_superuser(
        [
            str(Path(state["pg_bindir"]) / "pg_dump"),
            "-h",
            state["pg_socket_dir"],
            "-p",
            str(state["pg_port"]),
            "dealix",
        ]
    )
    with tmp.open("wb") as out:
        dumper = subprocess.Popen(
            argv, cwd="/", env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        zipper = subprocess.Popen(["gzip", "-6"], stdin=dumper.stdout, stdout=out, env=clean_env())
        assert dumper.stdout is not None
        dumper.stdout.close()
        _, err = dumper.communicate(timeout=300)
        zipper.wait(timeout=300)
    if dumper.returncode != 0 or zipper.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise SandboxError(
            "backups",
            f"pg_dump exited {dumper.returncode}, gzip {zipper.returncode}",
            log_tail=err.decode(errors="replace").splitlines()[-10:],
        )
    tmp.replace(target)
    if when is not None:
        os.utime(target, (when.timestamp(), when.timestamp()))
    return target


def backup_name(day: date) -> str:
    return f"dealix-{day.isoformat()}.sql.gz"


def seed_and_backup(sb: Sandbox, state: dict[str, Any], now: datetime | None = None) -> None:
    """Load the seed in phases with one nightly dump between phases."""
    now = now or datetime.now(UTC)
    state["seeded_at"] = now.isoformat(timespec="seconds")
    data = generate(now)
    backups = Path(state["backups_dir"])
    backups.mkdir(parents=True, exist_ok=True)
    for old in backups.glob("dealix-*.sql.gz"):
        old.unlink()
    lo: datetime | None = None
    with sb.connect("dealix") as conn:
        for t in dump_times(now):
            _load_phase(conn, data, lo, t)
            lo = t
            dump(sb, backups / backup_name(t.date()), when=t)
        _load_phase(conn, data, lo, now)
        conn.execute("ANALYZE")


def ensure_daily_backups(sb: Sandbox, state: dict[str, Any]) -> list[str]:
    """Make today's dump if the nightly one is missing (the sandbox was off at 03:00)."""
    now = datetime.now(UTC)
    today = now.date()
    target = Path(state["backups_dir"]) / backup_name(today)
    if target.exists():
        return []
    dump(sb, target, when=now)
    return [target.name]


def backups_summary(backups_dir: Path) -> tuple[bool, str]:
    """(healthy, detail): at least one dump, the newest under 26 h old and not tiny."""
    files = sorted(backups_dir.glob("dealix-*.sql.gz"))
    if not files:
        return False, f"no dealix-*.sql.gz in {backups_dir}"
    newest = max(files, key=lambda p: p.stat().st_mtime)
    st = newest.stat()
    age_h = (datetime.now(UTC).timestamp() - st.st_mtime) / 3600
    ok = age_h <= 26 and st.st_size >= 1024
    return ok, (
        f"{len(files)} files, newest {newest.name} ({age_h:.1f} h old, {st.st_size // 1024} KiB)"
    )
